// UTF-8 decoding and NFKC normalisation for the use-lite tokenizer.
#include "text/use_lite_unicode.h"

#include <algorithm>
#include <vector>

#include "text/use_lite_unicode_tables.h"

namespace xdrec::uselite {

namespace {

constexpr char32_t kReplacement = 0xFFFD;

// Hangul syllable arithmetic (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
              kSCount = kLCount * kNCount;

const tables::Decomposition* find_decomposition(char32_t c) {
  const auto* begin = tables::kDecomposition;
  const auto* end = begin + tables::kDecompositionSize;
  const auto* it =
      std::lower_bound(begin, end, c, [](const tables::Decomposition& d, char32_t v) { return d.cp < v; });
  return it != end && it->cp == c ? it : nullptr;
}

char32_t compose_pair(char32_t a, char32_t b) {
  // Hangul LV and LVT.
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* begin = tables::kComposition;
  const auto* end = begin + tables::kCompositionSize;
  const auto* it = std::lower_bound(begin, end, std::pair{a, b}, [](const tables::Composition& c, auto key) {
    return c.first < key.first || (c.first == key.first && c.second < key.second);
  });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

void decompose_into(char32_t c, std::u32string& out) {
  if (c < 0xA0) {  // ASCII and C1 controls have no decomposition
    out.push_back(c);
    return;
  }
  if (c >= kSBase && c < kSBase + kSCount) {
    const int s = static_cast<int>(c - kSBase);
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (const auto* d = find_decomposition(c)) {
    out.append(tables::kDecompositionData + d->offset, d->length);
    return;
  }
  out.push_back(c);
}

}  // namespace

int combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const uint32_t* begin = tables::kCombiningClass;
  const uint32_t* end = begin + tables::kCombiningClassSize;
  const uint32_t key = static_cast<uint32_t>(c) << 8;
  const uint32_t* it = std::lower_bound(begin, end, key);
  return it != end && (*it >> 8) == c ? static_cast<int>(*it & 0xFF) : 0;
}

std::u32string nfkc(std::u32string_view s) {
  if (std::all_of(s.begin(), s.end(), [](char32_t c) { return c < 0x80; })) return std::u32string(s);
  // 1. Full compatibility decomposition.
  std::u32string d;
  d.reserve(s.size() + s.size() / 4);
  for (char32_t c : s) decompose_into(c, d);
  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  std::vector<int> cls(d.size());
  for (size_t i = 0; i < d.size(); ++i) cls[i] = combining_class(d[i]);
  for (size_t i = 0; i < d.size();) {
    if (cls[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && cls[j] != 0) ++j;
    // Insertion sort (runs are short); stable.
    for (size_t a = i + 1; a < j; ++a) {
      const char32_t c = d[a];
      const int k = cls[a];
      size_t b = a;
      while (b > i && cls[b - 1] > k) {
        d[b] = d[b - 1];
        cls[b] = cls[b - 1];
        --b;
      }
      d[b] = c;
      cls[b] = k;
    }
    i = j;
  }
  // 3. Canonical composition.
  std::u32string out;
  out.reserve(d.size());
  size_t starter = std::u32string::npos;  // index in out of the last starter
  int last_class = 0;                     // class of the last character appended after it
  for (size_t i = 0; i < d.size(); ++i) {
    const char32_t c = d[i];
    const int k = cls[i];
    if (starter != std::u32string::npos) {
      const bool adjacent = out.size() == starter + 1;
      if (adjacent || (last_class != 0 && last_class < k)) {
        if (char32_t composite = compose_pair(out[starter], c)) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (k == 0) starter = out.size();
    last_class = k;
    out.push_back(c);
  }
  return out;
}

}  // namespace xdrec::uselite
