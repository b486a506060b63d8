// WordPiece tokenizer of the BERT family (Hugging Face layout): BERT normalisation (text cleaning, CJK
// splitting, accent stripping, lower-casing), BERT pre-tokenisation (whitespace and punctuation), greedy
// longest-match-first WordPiece, special tokens and truncation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/text_util.h"

namespace xdrec::text {

// Character classes and mappings used by the BERT normaliser and pre-tokeniser (Unicode 14 tables).
namespace unicode {
bool is_whitespace(char32_t c);                                // White_Space property, plus \t \n \r
bool is_control(char32_t c);                                   // categories Cc, Cf, Co, except \t \n \r
bool is_punctuation(char32_t c);                               // ASCII punctuation or any category P*
bool is_chinese_char(char32_t c);                              // CJK ideograph blocks
bool is_mark_nonspacing(char32_t c);                           // category Mn
void append_lowercase(char32_t c, std::u32string& out);        // full lower-case mapping of one character
void append_accent_stripped(char32_t c, std::u32string& out);  // NFD with category Mn removed
// UTF-8 decoding: an invalid byte sequence becomes U+FFFD (one per bad byte).
using text::decode_utf8;  // the text module's shared UTF-8 codec (text_util.h)
using text::encode_utf8;
using text::next_char;
}  // namespace unicode

struct WordPieceConfig {
  // Normaliser.
  bool clean_text = true;
  bool handle_chinese_chars = true;
  bool lowercase = true;
  std::optional<bool> strip_accents;  // unset: follows lowercase
  // Model.
  std::string unk_token = "[UNK]";
  std::string continuing_prefix = "##";
  int max_input_chars_per_word = 100;
  // Post-processing: [CLS] text [SEP].
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  std::string pad_token = "[PAD]";
  // Tokens matched verbatim in the raw text before normalisation (special tokens).
  std::vector<std::string> added_tokens;
  // Lower-case the raw text before anything else (sentence-transformers' do_lower_case).
  bool lowercase_input = false;
  // Length limit the tokenizer files declare (model_max_length, truncation.max_length); 0 if none.
  size_t model_max_length = 0;
};

class WordPieceTokenizer {
 public:
  // vocab[i] is the piece of id i. Throws Error when a special token is missing from the vocabulary.
  WordPieceTokenizer(std::vector<std::string> vocab, WordPieceConfig config);

  // Reads a model folder: tokenizer.json when present (its normaliser, model and post-processor settings take
  // precedence), otherwise vocab.txt with the settings of tokenizer_config.json. Throws Error naming the
  // file.
  static WordPieceTokenizer from_dir(const std::string& dir);

  // The normalised text (UTF-32) of one segment, as the BERT normaliser produces it.
  std::u32string normalize(std::u32string_view text) const;
  // Words after normalisation and pre-tokenisation, in UTF-8.
  std::vector<std::string> pre_tokenize(std::string_view text) const;
  // WordPiece ids of the text without special tokens; stops after max_pieces pieces (0: no limit).
  std::vector<int32_t> tokenize(std::string_view text, size_t max_pieces = 0) const;
  // [CLS] pieces [SEP], truncated to max_length ids in total (0: no limit; otherwise at least 2).
  std::vector<int32_t> encode(std::string_view text, size_t max_length = 0) const;

  const std::string& piece(int32_t id) const { return vocab_.at(size_t(id)); }
  std::vector<std::string> pieces(const std::vector<int32_t>& ids) const;
  size_t vocab_size() const { return vocab_.size(); }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  const WordPieceConfig& config() const { return config_; }
  // Hash of the vocabulary and every setting.
  uint64_t fingerprint() const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Map = std::unordered_map<std::string, int32_t, Hash, std::equal_to<>>;

  int32_t find(const Map& m, std::string_view s) const;
  void normalize_char(char32_t c, std::u32string& out) const;
  void word_pieces(std::u32string_view word, std::vector<int32_t>& out, std::string& scratch) const;
  void tokenize_segment(std::string_view raw, std::vector<int32_t>& out, size_t limit) const;
  std::vector<int32_t> tokenize_limited(std::string_view text, size_t limit) const;

  std::vector<std::string> vocab_;
  WordPieceConfig config_;
  Map start_;                                           // pieces that begin a word
  Map continue_;                                        // continuation pieces, without the prefix
  std::vector<std::pair<std::string, int32_t>> added_;  // longest first
  int32_t cls_id_ = -1, sep_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  bool strip_ = false;
};

}  // namespace xdrec::text
