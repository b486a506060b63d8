// Text handling shared by the encoders: UTF-8 decoding and encoding (every tokenizer), lower-casing and a
// simple word tokeniser (tfidf, glove). Internal to the text module.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace xdrec::text {

// Code points of a UTF-8 string. Ill-formed sequences decode to U+FFFD, one per maximal ill-formed subpart
// (as web browsers and Node.js do), so any byte string gives a result (callers that must reject invalid
// UTF-8 check it first).
std::u32string decode_utf8(std::string_view s);
// Decodes the character at byte i (same rules) and advances i past it.
char32_t next_char(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t c);
std::string encode_utf8(std::u32string_view s);

// Simple lower-case mapping of one code point: ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic (basic and
// U+0400-U+040F) and full-width Latin letters. Other code points are returned unchanged.
char32_t lower(char32_t c);
std::u32string lower(std::u32string_view s);
std::string lower_utf8(std::string_view s);

// Word characters: ASCII letters and digits, Latin-1 letters, and every code point from U+0100 up that is
// not a space, a control character or in a punctuation/symbol block (General Punctuation, CJK Symbols and
// Punctuation, full-width ASCII punctuation, arrows/math/box drawing/dingbats, emoji). Letters of scripts
// without spaces (CJK) therefore form one long "word".
bool is_word_char(char32_t c);
bool is_space(char32_t c);

// Lower-cased words: maximal runs of word characters.
std::vector<std::u32string> words(std::string_view utf8);

}  // namespace xdrec::text
