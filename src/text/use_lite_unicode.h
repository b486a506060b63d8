// Unicode helpers of the use-lite tokenizer: UTF-8 decoding and NFKC normalisation.
#pragma once

#include <string>
#include <string_view>

namespace xdrec::uselite {

// Code points of a UTF-8 string. Ill-formed sequences decode to U+FFFD (one per maximal ill-formed
// subpart, as web browsers and Node.js do), so any byte string gives a result.
std::u32string decode_utf8(std::string_view s);
std::string encode_utf8(std::u32string_view s);

// Canonical combining class of a code point (0 for starters).
int combining_class(char32_t c);

// Unicode Normalization Form KC (compatibility decomposition, canonical ordering, canonical composition).
std::u32string nfkc(std::u32string_view s);

}  // namespace xdrec::uselite
