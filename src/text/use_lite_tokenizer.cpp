// Unigram segmentation for the use-lite encoder.
#include "text/use_lite_tokenizer.h"

#include <algorithm>

#include "text/use_lite_unicode.h"
#include "xdrec/common.h"

namespace xdrec::uselite {

namespace {
constexpr char32_t kBoundary = 0x2581;  // "▁"
}

Tokenizer::Tokenizer(const nlohmann::json& vocab, const std::string& source, int reserved) {
  if (!vocab.is_array() || vocab.empty())
    throw Error(source + ": the vocabulary must be a non-empty JSON array of [piece, score] pairs");
  pieces_.reserve(vocab.size());
  skip_.reserve(vocab.size());
  nodes_.emplace_back();
  for (size_t id = 0; id < vocab.size(); ++id) {
    const auto& e = vocab[id];
    if (!e.is_array() || e.size() < 2 || !e[0].is_string() || !(e[1].is_number() || e[1].is_null()))
      throw Error(source + ": vocabulary entry " + std::to_string(id) +
                  " is not a [piece, score] pair with a string and a number or null");
    std::u32string piece = decode_utf8(e[0].get<std::string>());
    const double score = e[1].is_null() ? 0.0 : e[1].get<double>();
    int32_t utf16 = 0;
    for (char32_t c : piece) utf16 += c >= 0x10000 ? 2 : 1;
    skip_.push_back(utf16);
    if (static_cast<int>(id) >= reserved && !piece.empty()) {
      int32_t node = 0;
      for (char32_t c : piece) {
        const uint64_t key = (static_cast<uint64_t>(node) << 21) | c;
        auto it = edges_.find(key);
        if (it == edges_.end()) {
          nodes_.emplace_back();
          it = edges_.emplace(key, static_cast<int32_t>(nodes_.size() - 1)).first;
        }
        node = it->second;
      }
      // A piece listed twice keeps the later id and score.
      nodes_[static_cast<size_t>(node)] = Node{score, static_cast<int32_t>(id)};
    }
    pieces_.push_back(std::move(piece));
  }
  bool interior_boundary = false;
  for (size_t id = static_cast<size_t>(std::max(reserved, 0)); id < pieces_.size(); ++id)
    if (pieces_[id].find(kBoundary, 1) != std::u32string::npos) interior_boundary = true;
  const int32_t boundary = child(0, kBoundary);
  cut_at_spaces_ = !interior_boundary && boundary >= 0 && nodes_[static_cast<size_t>(boundary)].id >= 0;
  if (skip_[0] < 1) throw Error(source + ": vocabulary entry 0 (the unknown piece) must not be empty");
}

std::vector<int32_t> Tokenizer::encode(std::string_view utf8) const {
  std::u32string text = nfkc(decode_utf8(utf8));
  if (text.empty()) return {};
  std::u32string sym;
  sym.reserve(text.size() + 1);
  sym.push_back(kBoundary);
  for (char32_t c : text) sym.push_back(c == U' ' ? kBoundary : c);
  const size_t n = sym.size();

  // best[e]: best total score of a segmentation of sym[0, e); 0 also marks "not reached yet", so the first
  // candidate always replaces it. Later candidates replace an equal score.
  std::vector<double> best(n + 1, 0.0);
  std::vector<int32_t> last(n + 1, 0);  // id of the piece ending at e in that segmentation
  auto offer = [&](size_t end, size_t len, double score, int32_t id) {
    const double total = score + best[end - len];
    if (best[end] == 0.0 || total >= best[end]) {
      best[end] = total;
      last[end] = id;
    }
  };
  for (size_t i = 0; i < n; ++i) {
    int32_t node = 0;
    bool any = false;
    for (size_t j = i; j < n; ++j) {
      node = child(node, sym[j]);
      if (node < 0) break;
      const Node& nd = nodes_[static_cast<size_t>(node)];
      if (nd.id >= 0) {
        offer(j + 1, j + 1 - i, nd.score, nd.id);
        any = true;
      }
    }
    if (!any) offer(i + 1, 1, 0.0, 0);  // no piece starts here: the character is unknown
  }

  // Back-track from the end. Each step moves back by the UTF-16 length of the chosen piece's text, which
  // equals its length in code points for every piece of the vocabulary this encoder ships with.
  std::vector<int32_t> ids;
  for (long long pos = static_cast<long long>(n); pos > 0;) {
    const int32_t id = last[static_cast<size_t>(pos)];
    ids.push_back(id);
    pos -= skip_[static_cast<size_t>(id)];
  }
  std::vector<int32_t> merged;
  merged.reserve(ids.size());
  for (auto it = ids.rbegin(); it != ids.rend(); ++it)
    if (!(*it == 0 && !merged.empty() && merged.back() == 0)) merged.push_back(*it);
  return merged;
}

std::vector<int32_t> Tokenizer::encode_prefix(std::string_view utf8, size_t min_tokens) const {
  // A space starts a "▁" piece in every segmentation, NFKC never composes across it, and what precedes it
  // is segmented without looking past it: the ids of the text before the space are the first ids of the
  // whole text.
  if (cut_at_spaces_) {
    for (size_t len = std::max<size_t>(4096, 32 * min_tokens); len < utf8.size(); len *= 4) {
      const size_t cut = utf8.find(' ', len);
      if (cut == std::string_view::npos) break;
      std::vector<int32_t> ids = encode(utf8.substr(0, cut));
      if (ids.size() >= min_tokens) return ids;
    }
  }
  return encode(utf8);
}

}  // namespace xdrec::uselite
