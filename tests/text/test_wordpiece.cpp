// WordPiece tokenizer: the reference fixtures (ids of the Hugging Face tokenizer), hand-made vocabularies for
// each step of the BERT pipeline, the Unicode tables and bad tokenizer files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "text/wordpiece.h"
#include "xdrec/common.h"

namespace fs = std::filesystem;
using namespace xdrec;
using namespace xdrec::text;

namespace {

std::string fixture_dir(const std::string& model) {
  return (fs::path(XDREC_SHARED_DATA) / ".." / "fixtures" / "bert" / model).lexically_normal().string();
}

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("xdrec_wp_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  void write(const std::string& name, const std::string& content) const {
    std::ofstream(file(name), std::ios::binary) << content;
  }
};

using xdrec::testing_util::throws_error;

// A small vocabulary: specials, then the given pieces.
WordPieceTokenizer make(std::vector<std::string> pieces, WordPieceConfig cfg = {}) {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  v.insert(v.end(), pieces.begin(), pieces.end());
  if (cfg.added_tokens.empty()) cfg.added_tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  return WordPieceTokenizer(v, cfg);
}

std::vector<std::string> toks(const WordPieceTokenizer& t, const std::string& text) {
  return t.pieces(t.tokenize(text));
}

using Strings = std::vector<std::string>;

void check_fixture(const std::string& model,
                   const std::function<WordPieceTokenizer(const std::string&)>& load) {
  const std::string dir = fixture_dir(model);
  if (!fs::exists(dir + "/reference.jsonl")) GTEST_SKIP() << "fixture " << dir << " not found";
  const WordPieceTokenizer tok = load(dir);
  std::ifstream in(dir + "/reference.jsonl");
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    const std::string text = j.at("text");
    const auto want = j.at("input_ids").get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, 64), want) << model << ": " << text;
    EXPECT_EQ(tok.pieces(tok.encode(text, 64)), j.at("tokens").get<Strings>()) << model << ": " << text;
    ++n;
  }
  EXPECT_EQ(n, 50u);
}

}  // namespace

TEST(WordPiece, ReproducesTheReferenceTokenizerUncased) {
  check_fixture("tiny-bert-uncased", [](const std::string& d) { return WordPieceTokenizer::from_dir(d); });
}

TEST(WordPiece, ReproducesTheReferenceTokenizerCased) {
  check_fixture("tiny-bert-cased", [](const std::string& d) { return WordPieceTokenizer::from_dir(d); });
}

TEST(WordPiece, VocabTxtWithTokenizerConfigMatchesTokenizerJson) {
  for (const std::string model : {"tiny-bert-uncased", "tiny-bert-cased"}) {
    check_fixture(model, [](const std::string& d) {
      static TempDir t;  // vocab.txt and tokenizer_config.json only
      fs::copy_file(d + "/vocab.txt", t.file("vocab.txt"), fs::copy_options::overwrite_existing);
      fs::copy_file(d + "/tokenizer_config.json", t.file("tokenizer_config.json"),
                    fs::copy_options::overwrite_existing);
      fs::permissions(t.file("vocab.txt"), fs::perms::owner_write, fs::perm_options::add);
      fs::permissions(t.file("tokenizer_config.json"), fs::perms::owner_write, fs::perm_options::add);
      auto tok = WordPieceTokenizer::from_dir(t.path.string());
      EXPECT_EQ(tok.config().model_max_length, 64u);
      return tok;
    });
  }
}

TEST(WordPiece, GreedyLongestMatchFirst) {
  auto t = make({"un", "unaff", "##aff", "##able", "##a", "##ff", "a", "b", "##b", "able"});
  EXPECT_EQ(toks(t, "unaffable"), (Strings{"unaff", "##able"}));
  EXPECT_EQ(toks(t, "unable"), (Strings{"un", "##able"}));
  EXPECT_EQ(toks(t, "able ab"), (Strings{"able", "a", "##b"}));
  // A word with a piece that cannot be matched becomes one [UNK], however much of it matched.
  EXPECT_EQ(toks(t, "unaffablez b"), (Strings{"[UNK]", "b"}));
  // The prefix only applies to continuation pieces: "##able" is not a word start.
  EXPECT_EQ(toks(t, "ffb"), (Strings{"[UNK]"}));
}

TEST(WordPiece, OverlongWordsAreUnknown) {
  WordPieceConfig cfg;
  cfg.max_input_chars_per_word = 5;
  auto t = make({"a", "##a"}, cfg);
  EXPECT_EQ(toks(t, "aaaaa"), (Strings{"a", "##a", "##a", "##a", "##a"}));
  EXPECT_EQ(toks(t, "aaaaaa a"), (Strings{"[UNK]", "a"}));
  // The limit counts characters, not bytes: five two-byte characters are fine.
  cfg.strip_accents = false;
  auto u = make({"é", "##é"}, cfg);
  EXPECT_EQ(toks(u, "ééééé"), (Strings{"é", "##é", "##é", "##é", "##é"}));
  // The default limit is 100 characters.
  auto d = make({"a", "##a"});
  EXPECT_EQ(d.tokenize(std::string(100, 'a')).size(), 100u);
  EXPECT_EQ(toks(d, std::string(101, 'a')), (Strings{"[UNK]"}));
}

TEST(WordPiece, PunctuationAndWhitespaceSplitting) {
  auto t = make({"hello", "world", ",", "!", "$", "-", "—", "a", "b", "'", "s", "+", "~"});
  EXPECT_EQ(toks(t, "hello,world!"), (Strings{"hello", ",", "world", "!"}));
  EXPECT_EQ(toks(t, "  hello \t\n world  "), (Strings{"hello", "world"}));
  EXPECT_EQ(toks(t, "a's"), (Strings{"a", "'", "s"}));
  EXPECT_EQ(toks(t, "$a-b—a"), (Strings{"$", "a", "-", "b", "—", "a"}));
  EXPECT_EQ(toks(t, "a+b~"), (Strings{"a", "+", "b", "~"})) << "ASCII symbols count as punctuation";
  EXPECT_EQ(toks(t, "a\u3000b\u00a0a"), (Strings{"a", "b", "a"})) << "ideographic and no-break spaces";
  EXPECT_TRUE(t.tokenize("").empty());
  EXPECT_TRUE(t.tokenize(" \t\n ").empty());
}

TEST(WordPiece, ChineseCharactersAreSplitButOtherScriptsAreNot) {
  auto t = make({"中", "文", "ab", "日本", "##本", "日"});
  EXPECT_EQ(toks(t, "ab中文ab"), (Strings{"ab", "中", "文", "ab"}));
  // Kana are not in the CJK ideograph blocks: "日本" after splitting is 日 + 本, but ひ stays in its word.
  EXPECT_EQ(toks(t, "日本"), (Strings{"日", "[UNK]"})) << "本 alone is a word start, not ##本";
  WordPieceConfig cfg;
  cfg.handle_chinese_chars = false;
  auto u = make({"中", "文", "ab", "日本", "##本", "日"}, cfg);
  EXPECT_EQ(toks(u, "日本"), (Strings{"日本"}));
}

TEST(WordPiece, TextCleaningRemovesControlAndFormatCharacters) {
  auto t = make({"ab", "a", "b", "##b"});
  EXPECT_EQ(toks(t,
                 "a\x07"
                 "b"),
            (Strings{"ab"}))
      << "BEL is removed, not a separator";
  EXPECT_EQ(toks(t, "a\u200bb"), (Strings{"ab"})) << "zero-width space (Cf) is removed";
  EXPECT_EQ(toks(t, std::string("a\0b", 3)), (Strings{"ab"}));
  EXPECT_EQ(toks(t,
                 "a\xef\xbf\xbd"
                 "b"),
            (Strings{"ab"}))
      << "U+FFFD is removed";
  EXPECT_EQ(toks(t,
                 "a\xff"
                 "b"),
            (Strings{"ab"}))
      << "invalid UTF-8 becomes U+FFFD, then is removed";
  EXPECT_EQ(toks(t, "a\tb\rb"), (Strings{"a", "b", "b"})) << "tab and CR are whitespace";
  EXPECT_EQ(toks(t,
                 "a\x0b"
                 "b"),
            (Strings{"ab"}))
      << "vertical tab is a control character";
  EXPECT_EQ(toks(t, "a\ue000b"), (Strings{"ab"})) << "private use (Co)";
  WordPieceConfig cfg;
  cfg.clean_text = false;
  auto u = make({"ab", "a", "b", "##b"}, cfg);
  EXPECT_EQ(toks(u,
                 "a\x07"
                 "b"),
            (Strings{"[UNK]"}));
}

TEST(WordPiece, LowerCasingAndAccentStrippingAsConfigured) {
  const Strings vocab = {"cafe", "café", "Café", "Cafe", "σοφια", "ǆ"};
  WordPieceConfig lower;  // lowercase, strip_accents unset: strips too
  EXPECT_EQ(toks(make(vocab, lower), "CAFÉ"), (Strings{"cafe"}));
  EXPECT_EQ(toks(make(vocab, lower), "ΣΟΦΊΑ"), (Strings{"σοφια"}));
  WordPieceConfig keep = lower;
  keep.strip_accents = false;
  EXPECT_EQ(toks(make(vocab, keep), "CAFÉ"), (Strings{"café"}));
  WordPieceConfig cased;
  cased.lowercase = false;
  EXPECT_EQ(toks(make(vocab, cased), "Café"), (Strings{"Café"}));
  cased.strip_accents = true;
  EXPECT_EQ(toks(make(vocab, cased), "Café"), (Strings{"Cafe"}));
  // Decomposed input (e + combining acute) and precomposed input give the same result.
  EXPECT_EQ(toks(make(vocab, lower), "Cafe\u0301"), (Strings{"cafe"}));
  EXPECT_EQ(toks(make(vocab, keep), "CAFE\u0301"), (Strings{"[UNK]"})) << "no composition: e + U+0301";
  // Compatibility characters are not decomposed (NFD, not NFKD): Ǆ lower-cases to ǆ.
  EXPECT_EQ(toks(make(vocab, lower), "Ǆ"), (Strings{"ǆ"}));
  // sentence-transformers' do_lower_case lower-cases before the tokenizer, even for a cased one.
  WordPieceConfig input = cased;
  input.strip_accents.reset();
  input.lowercase_input = true;
  EXPECT_EQ(toks(make(vocab, input), "CAFÉ"), (Strings{"café"}));
}

TEST(WordPiece, SpecialTokensInTheTextAreKept) {
  auto t = make({"a", "b", "[", "]", "sep"});
  EXPECT_EQ(toks(t, "a [SEP] b"), (Strings{"a", "[SEP]", "b"}));
  EXPECT_EQ(toks(t, "a[SEP]b[MASK]"), (Strings{"a", "[SEP]", "b", "[MASK]"}));
  EXPECT_EQ(toks(t, "[sep]"), (Strings{"[", "sep", "]"})) << "matched verbatim, before lower-casing";
}

TEST(WordPiece, EncodeAddsClsSepAndTruncates) {
  auto t = make({"a", "b", "c", "d"});
  EXPECT_EQ(t.pieces(t.encode("a b c d")), (Strings{"[CLS]", "a", "b", "c", "d", "[SEP]"}));
  EXPECT_EQ(t.pieces(t.encode("a b c d", 4)), (Strings{"[CLS]", "a", "b", "[SEP]"}));
  EXPECT_EQ(t.pieces(t.encode("a b c d", 6)), (Strings{"[CLS]", "a", "b", "c", "d", "[SEP]"}));
  EXPECT_EQ(t.pieces(t.encode("a b c d", 2)), (Strings{"[CLS]", "[SEP]"}));
  EXPECT_EQ(t.pieces(t.encode("")), (Strings{"[CLS]", "[SEP]"}));
  EXPECT_TRUE(throws_error([&] { t.encode("a", 1); }, {"max_length"}));
  // A huge text is cut without tokenising all of it, and the result equals that of its prefix.
  std::string huge;
  for (int i = 0; i < 200000; ++i) huge += "a b c d ";
  EXPECT_EQ(t.encode(huge, 64), t.encode(huge.substr(0, 200), 64));
  EXPECT_EQ(t.encode(huge, 64).size(), 64u);
  EXPECT_EQ(t.tokenize(huge.substr(0, 80), 7).size(), 7u);
}

TEST(WordPiece, UnicodeTables) {
  using namespace unicode;
  EXPECT_TRUE(is_punctuation(U'—'));
  EXPECT_TRUE(is_punctuation(U'¿'));
  EXPECT_TRUE(is_punctuation(U'「'));
  EXPECT_TRUE(is_punctuation(U'$')) << "ASCII symbol";
  EXPECT_FALSE(is_punctuation(U'€')) << "currency sign outside ASCII is Sc";
  EXPECT_FALSE(is_punctuation(U'a'));
  EXPECT_TRUE(is_control(0x200B));
  EXPECT_TRUE(is_control(0x7F));
  EXPECT_TRUE(is_control(0xFEFF));
  EXPECT_FALSE(is_control(U'\t'));
  EXPECT_FALSE(is_control(U'\n'));
  EXPECT_FALSE(is_control(U'a'));
  EXPECT_FALSE(is_control(0x0378)) << "unassigned code points are not control characters";
  EXPECT_TRUE(is_whitespace(0x3000));
  EXPECT_TRUE(is_whitespace(0x2009));
  EXPECT_FALSE(is_whitespace(0x200B));
  EXPECT_TRUE(is_chinese_char(0x4E2D));
  EXPECT_TRUE(is_chinese_char(0x20000));
  EXPECT_FALSE(is_chinese_char(0x3042)) << "hiragana";
  EXPECT_TRUE(is_mark_nonspacing(0x301));
  EXPECT_FALSE(is_mark_nonspacing(U'e'));
  auto lower = [](char32_t c) {
    std::u32string s;
    append_lowercase(c, s);
    return s;
  };
  EXPECT_EQ(lower(U'A'), U"a");
  EXPECT_EQ(lower(U'Ä'), U"ä");
  EXPECT_EQ(lower(U'Σ'), U"σ");
  EXPECT_EQ(lower(U'Д'), U"д");
  EXPECT_EQ(lower(U'Ā'), U"ā");
  EXPECT_EQ(lower(U'ā'), U"ā");
  EXPECT_EQ(lower(U'Ÿ'), U"ÿ");
  EXPECT_EQ(lower(0x130), U"i\u0307");
  EXPECT_EQ(lower(0xFF21), U"\uFF41") << "full-width A";
  EXPECT_EQ(lower(0x10400), U"\U00010428") << "Deseret";
  EXPECT_EQ(lower(U'ß'), U"ß");
  auto strip = [](char32_t c) {
    std::u32string s;
    append_accent_stripped(c, s);
    return s;
  };
  EXPECT_EQ(strip(U'é'), U"e");
  EXPECT_EQ(strip(U'ǖ'), U"u");
  EXPECT_EQ(strip(0x212B), U"A") << "angstrom sign: singleton to Å, then A";
  EXPECT_EQ(strip(0x301), U"");
  EXPECT_EQ(strip(U'ø'), U"ø") << "no canonical decomposition";
  EXPECT_EQ(strip(0xAC01), U"\u1100\u1161\u11A8") << "Hangul syllable GAG";
  EXPECT_EQ(strip(0xAC00), U"\u1100\u1161");
  EXPECT_EQ(decode_utf8("a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80"), U"aé中😀");
  EXPECT_EQ(decode_utf8("\xc0\x80"), U"\uFFFD\uFFFD") << "overlong encoding";
  EXPECT_EQ(decode_utf8("\xed\xa0\x80"), U"\uFFFD\uFFFD\uFFFD") << "surrogate";
  // A truncated sequence is one maximal ill-formed subpart: one U+FFFD, as Python's
  // b"\xe4\xb8".decode("utf-8", "replace") and web browsers give.
  EXPECT_EQ(decode_utf8("\xe4\xb8"), U"\uFFFD") << "truncated sequence";
  EXPECT_EQ(decode_utf8("\xe4\xb8x"), U"\uFFFDx") << "truncated sequence before ASCII";
  EXPECT_EQ(encode_utf8(U"aé中😀"), "a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80");
}

TEST(WordPiece, BadTokenizerFilesAreErrors) {
  TempDir d;
  EXPECT_TRUE(throws_error([&] { WordPieceTokenizer::from_dir(d.path.string()); },
                           {"neither tokenizer.json nor vocab.txt", d.path.string()}));
  d.write("tokenizer.json", "{not json");
  EXPECT_TRUE(throws_error([&] { WordPieceTokenizer::from_dir(d.path.string()); },
                           {d.file("tokenizer.json"), "malformed JSON"}));
  d.write("tokenizer.json", R"({"model": {"type": "Unigram", "vocab": []}})");
  EXPECT_TRUE(throws_error([&] { WordPieceTokenizer::from_dir(d.path.string()); }, {"Unigram", "WordPiece"}));
  d.write("tokenizer.json", R"({"model": {"type": "WordPiece", "vocab": {"[CLS]": 0, "[SEP]": 1, "a": 2}}})");
  EXPECT_TRUE(throws_error([&] { WordPieceTokenizer::from_dir(d.path.string()); },
                           {"[UNK]", "not in the vocabulary"}));
  d.write("tokenizer.json", R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2}},
      "normalizer": {"type": "NFKC"}})");
  EXPECT_TRUE(throws_error([&] { WordPieceTokenizer::from_dir(d.path.string()); }, {"normalizer 'NFKC'"}));
  d.write("tokenizer.json", R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2}},
      "pre_tokenizer": {"type": "Metaspace"}})");
  EXPECT_TRUE(
      throws_error([&] { WordPieceTokenizer::from_dir(d.path.string()); }, {"pre-tokenizer 'Metaspace'"}));
  d.write("tokenizer.json", R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2}},
      "normalizer": {"type": "BertNormalizer", "lowercase": true}})");
  auto t = WordPieceTokenizer::from_dir(d.path.string());
  EXPECT_EQ(t.encode("[CLS]"), (std::vector<int32_t>{1, 0, 0, 0, 2}))
      << "no added tokens declared: [CLS] is text";
  fs::remove(d.file("tokenizer.json"));
  d.write("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n");
  d.write("tokenizer_config.json", R"({"do_lower_case": true, "unk_token": "[UNK]"})");
  auto v = WordPieceTokenizer::from_dir(d.path.string());
  EXPECT_EQ(v.pieces(v.encode("HELLO [SEP] world")), (Strings{"[CLS]", "hello", "[SEP]", "[UNK]", "[SEP]"}));
  d.write("tokenizer_config.json", R"({"do_lower_case": true, "unk_token": "<unk>"})");
  EXPECT_TRUE(throws_error([&] { WordPieceTokenizer::from_dir(d.path.string()); }, {"vocab.txt", "<unk>"}));
}

TEST(WordPiece, FingerprintFollowsVocabularyAndSettings) {
  WordPieceConfig cased;
  cased.lowercase = false;
  EXPECT_EQ(make({"a"}).fingerprint(), make({"a"}).fingerprint());
  EXPECT_NE(make({"a"}).fingerprint(), make({"b"}).fingerprint());
  EXPECT_NE(make({"a"}).fingerprint(), make({"a"}, cased).fingerprint());
}
