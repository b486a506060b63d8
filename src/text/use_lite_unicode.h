// Unicode helpers of the use-lite tokenizer: UTF-8 decoding and NFKC normalisation.
#pragma once

#include <string>
#include <string_view>

#include "text/text_util.h"

namespace xdrec::uselite {

// UTF-8 decoding and encoding: the text module's shared codec (ill-formed input decodes to U+FFFD, one per
// maximal ill-formed subpart, as web browsers and Node.js do).
using text::decode_utf8;
using text::encode_utf8;

// Canonical combining class of a code point (0 for starters).
int combining_class(char32_t c);

// Unicode Normalization Form KC (compatibility decomposition, canonical ordering, canonical composition).
std::u32string nfkc(std::u32string_view s);

}  // namespace xdrec::uselite
