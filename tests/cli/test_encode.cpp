// End-to-end tests of `xdrec encode` and `xdrec embed`: escapes, empty lines, CRLF, invalid UTF-8, --ids,
// --fit-on, and the embedding cache across two runs.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "xdrec/encoder.h"
#include "xdrec/tensor_io.h"

namespace fs = std::filesystem;

namespace xdrec {
namespace {

std::string cli() {
  const char* p = std::getenv("XDREC_CLI");
  return p ? p : std::string(XDREC_BINARY_DIR) + "/xdrec";
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct CliRun {
  int status = -1;
  std::string out, err;
};

class EncodeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string t = (fs::temp_directory_path() / "xdrec-encode-cli-XXXXXX").string();
    if (!mkdtemp(t.data())) throw Error("mkdtemp failed");
    dir = t;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
    return (dir / name).string();
  }
  // Runs the CLI with `input` on standard input and a private cache directory.
  CliRun run(const std::string& args, const std::string& input = "") {
    write("stdin.txt", input);
    const std::string cmd = "XDG_CACHE_HOME='" + (dir / "cache").string() + "' " + cli() + " " + args +
                            " < '" + (dir / "stdin.txt").string() + "' > '" + (dir / "stdout.txt").string() +
                            "' 2> '" + (dir / "stderr.txt").string() + "'";
    CliRun r;
    const int st = std::system(cmd.c_str());
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(dir / "stdout.txt");
    r.err = slurp(dir / "stderr.txt");
    return r;
  }
  fs::path dir;
};

std::vector<std::vector<double>> parse_lines(const std::string& out) {
  std::vector<std::vector<double>> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line).get<std::vector<double>>());
  return rows;
}

TEST_F(EncodeCli, VectorsRoundTripWithEscapesEmptyLinesAndCrlf) {
  const std::string input =
      "Stainless steel knife\nline\\nwith newline\nback\\\\slash and \\t tab\n\nCrème brûlée\r\n";
  const std::vector<std::string> texts = {"Stainless steel knife", "line\nwith newline",
                                          "back\\slash and \\t tab", "", "Crème brûlée"};
  CliRun r = run("encode --encoder tfidf:dim=6 --threads 2", input);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto rows = parse_lines(r.out);
  ASSERT_EQ(rows.size(), texts.size());
  // The same vectors as the library gives for the unescaped texts (fitted on them), to the last bit.
  auto enc = create_encoder("tfidf:dim=6");
  enc->fit(texts, 1);
  const Matrix m = enc->encode(texts, 1);
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 6u);
    for (size_t j = 0; j < 6; ++j) EXPECT_EQ(float(rows[i][j]), m(i, j)) << i << "," << j;
  }
  for (double x : rows[3]) EXPECT_EQ(x, 0.0);  // the empty line
  EXPECT_NE(r.err.find("5 texts"), std::string::npos) << r.err;
}

TEST_F(EncodeCli, LastLineWithoutNewlineAndEmptyInput) {
  CliRun r = run("encode --encoder tfidf:dim=3 --quiet", "one\ntwo");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(parse_lines(r.out).size(), 2u);
  EXPECT_TRUE(r.err.empty()) << r.err;
  CliRun e = run("encode --encoder tfidf:dim=3 --quiet", "");
  EXPECT_EQ(e.status, 0) << e.err;
  EXPECT_TRUE(e.out.empty());
}

TEST_F(EncodeCli, FitOnAnotherFile) {
  const std::vector<std::string> corpus = {"red apple", "green apple", "red wine", "white wine", "apple pie"};
  std::string file;
  for (auto& c : corpus) file += c + "\n";
  const std::string path = write("corpus.txt", file);
  CliRun r = run("encode --encoder tfidf:dim=4 --quiet --fit-on '" + path + "'", "apple\nwine\n");
  ASSERT_EQ(r.status, 0) << r.err;
  auto enc = create_encoder("tfidf:dim=4");
  enc->fit(corpus, 1);
  const Matrix m = enc->encode(std::vector<std::string>{"apple", "wine"}, 1);
  const auto rows = parse_lines(r.out);
  ASSERT_EQ(rows.size(), 2u);
  for (size_t i = 0; i < 2; ++i)
    for (size_t j = 0; j < 4; ++j) EXPECT_EQ(float(rows[i][j]), m(i, j));
}

TEST_F(EncodeCli, InvalidUtf8NamesTheLine) {
  CliRun r = run("encode --encoder tfidf:dim=3 --quiet", "fine\nalso fine\nbad \xc3\x28 here\n");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("<stdin>:3:5: invalid UTF-8"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST_F(EncodeCli, IdsNeedATokenizer) {
  CliRun r = run("encode --encoder tfidf --ids", "hello\n");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("no tokenizer"), std::string::npos) << r.err;
  CliRun u = run("encode --encoder nosuch", "hello\n");
  EXPECT_NE(u.status, 0);
  EXPECT_NE(u.err.find("unknown encoder 'nosuch'"), std::string::npos) << u.err;
}

// A two-dimensional word vector file in the glove encoder's format (see src/text/glove.cpp).
std::string glove_file(const std::vector<std::string>& words) {
  auto put32 = [](std::string& b, uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
  std::string block;
  std::vector<uint32_t> offsets{0};
  for (auto& w : words) block += w, offsets.push_back(uint32_t(block.size()));
  std::string b = "XDRGLOVE";
  put32(b, 1);
  put32(b, 2);
  put32(b, uint32_t(words.size()));
  put32(b, 0);
  const uint64_t wb = block.size();
  b.append(reinterpret_cast<const char*>(&wb), 8);
  for (uint32_t o : offsets) put32(b, o);
  b += block;
  while (b.size() % 4) b.push_back('\0');
  for (size_t i = 0; i < words.size(); ++i) {
    const float v[2] = {float(i), 1.0f};
    b.append(reinterpret_cast<const char*>(v), 8);
  }
  return b;
}

TEST_F(EncodeCli, IdsOfATokenizingEncoderFollowTheEscapes) {
  const std::string file = write("glove.bin", glove_file({"line", "with", "back", "slash", "nwith"}));
  CliRun r = run("encode --quiet --ids --encoder glove:file=" + file,
                 "line\\nwith\nline\\\\nwith\n\nBACK\\\\slash\n");
  ASSERT_EQ(r.status, 0) << r.err;
  // "\n" is a newline (two words), "\\n" a backslash then "n" (the run "nwith"); an empty line has no ids.
  EXPECT_EQ(r.out, "[0,1]\n[0,4]\n[]\n[2,3]\n");
}

TEST_F(EncodeCli, EmbedWritesVectorsAndReusesTheCache) {
  fs::create_directories(dir / "data");
  std::ofstream(dir / "data" / "interactions.tsv") << "user\titem\nu1\ti1\nu1\ti2\nu2\ti3\nu3\ti1\n";
  std::ofstream(dir / "data" / "items.tsv")
      << "item\ttitle\tdescription\tcategories\ni1\tChef knife\tSharp steel blade\tKitchen|Knives\n"
         "i2\tBread knife\t\tKitchen|Knives\ni3\tGreen tea\tLoose leaf\tTea\n";
  std::ofstream(dir / "data" / "users.tsv") << "user\ttext\nu1\tcooks a lot\nu2\t\nu3\tdrinks tea\n";
  const std::string data = (dir / "data").string(), out = (dir / "vectors.safetensors").string(),
                    cache = (dir / "emb").string();
  const std::string args = "embed '" + data + "' --encoder tfidf:dim=4 --cache-dir '" + cache + "' -o '" +
                           out + "' --quiet --threads 2";
  CliRun r1 = run(args);
  ASSERT_EQ(r1.status, 0) << r1.out << r1.err;
  EXPECT_NE(r1.out.find("3 items + 3 users"), std::string::npos) << r1.out;
  // Three item texts and two profiles: u2 has no profile text, so it is not encoded and gets a row of zeros.
  EXPECT_NE(r1.out.find("0 from the cache, 5 encoded"), std::string::npos) << r1.out;
  std::map<std::string, std::string> meta;
  const TensorMap t = load_safetensors(out, &meta);
  const Matrix items = get_tensor(t, "items").to_matrix("items");
  const Matrix users = get_tensor(t, "users").to_matrix("users");
  EXPECT_EQ(items.rows, 3u);
  EXPECT_EQ(items.cols, 4u);
  EXPECT_EQ(users.rows, 3u);
  for (size_t k = 0; k < users.cols; ++k) EXPECT_EQ(users(1, k), 0.0f) << "u2 has no profile text";
  float norm_u1 = 0;
  for (size_t k = 0; k < users.cols; ++k) norm_u1 += users(0, k) * users(0, k);
  EXPECT_GT(norm_u1, 0.0f);
  EXPECT_EQ(meta.at("encoder").rfind("tfidf:", 0), 0u);
  EXPECT_FALSE(meta.at("fingerprint").empty());
  EXPECT_EQ(meta.at("template"), "{title}. {categories}. {description}");

  CliRun r2 = run(args);
  ASSERT_EQ(r2.status, 0) << r2.err;
  EXPECT_NE(r2.out.find("5 from the cache, 0 encoded"), std::string::npos) << r2.out;
  EXPECT_EQ(get_tensor(load_safetensors(out), "items").to_matrix("items").data, items.data);

  CliRun bad = run("embed '" + data + "' --encoder tfidf --template '{title} {genre}' --quiet");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("unknown placeholder {genre}"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace xdrec
