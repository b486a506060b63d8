// The SentencePiece-style unigram tokenizer of the use-lite encoder: NFKC normalisation, "▁" word
// boundaries and a best-score (Viterbi) segmentation over the vocabulary's pieces.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace xdrec::uselite {

class Tokenizer {
 public:
  Tokenizer() = default;
  // vocab: a JSON array of [piece, score] pairs, the id of a piece being its position; a null score counts
  // as 0. The first `reserved` ids (unknown, <s>, </s>, ...) are never produced by segmentation except id 0,
  // which stands for a character no piece covers. Throws Error naming `source` on a malformed vocabulary.
  Tokenizer(const nlohmann::json& vocab, const std::string& source, int reserved = 6);

  // Ids of a UTF-8 text. The text is NFKC-normalised, prefixed with "▁" and every U+0020 becomes "▁"; the
  // segmentation maximises the sum of piece scores (ties go to the piece that starts last), characters
  // that start no piece become id 0, and runs of id 0 are merged into one. The empty text gives no ids.
  std::vector<int32_t> encode(std::string_view utf8) const;

  // A prefix of encode(utf8) with at least `min_tokens` ids (all ids when there are fewer), reading only as
  // much of a long text as needed: a prefix ending before a U+0020 space is a cut point of every
  // segmentation when no piece has "▁" after its first character (true of the shipped vocabulary).
  std::vector<int32_t> encode_prefix(std::string_view utf8, size_t min_tokens) const;

  size_t size() const { return pieces_.size(); }
  const std::u32string& piece(int32_t id) const { return pieces_[static_cast<size_t>(id)]; }

 private:
  struct Node {
    double score = 0;
    int32_t id = -1;  // -1: no piece ends here
  };
  int32_t child(int32_t node, char32_t c) const {
    auto it = edges_.find((static_cast<uint64_t>(node) << 21) | c);
    return it == edges_.end() ? -1 : it->second;
  }

  std::vector<std::u32string> pieces_;
  bool cut_at_spaces_ = false;  // "▁" is a piece and no piece has "▁" after its first character
  std::vector<int32_t> skip_;   // per id: how far back-tracking steps over the piece (its UTF-16 length)
  std::vector<Node> nodes_;     // trie over code points; node 0 is the root
  std::unordered_map<uint64_t, int32_t> edges_;
};

}  // namespace xdrec::uselite
