// Encoder spec parsing: positional paths/URLs and key=value pairs reach the encoder as documented.
#include <gtest/gtest.h>

#include "xdrec/encoder.h"

using namespace xdrec;

namespace {

// Records the Spec it was created from.
class EchoEncoder final : public TextEncoder {
 public:
  explicit EchoEncoder(const Spec& s) : spec_(s) {}
  std::string name() const override { return "echo-test"; }
  std::string spec() const override { return spec_.str(); }
  size_t dim() const override { return 1; }
  std::string fingerprint() const override { return "echo"; }
  Matrix encode(std::span<const std::string> texts, int) const override { return Matrix(texts.size(), 1); }
  Spec spec_;
};

XDREC_REGISTER_ENCODER(echo_test, "echo-test", "records its spec (tests only)", EchoEncoder);

Spec parsed(const std::string& text) {
  auto e = create_encoder(text);
  return dynamic_cast<EchoEncoder&>(*e).spec_;
}

}  // namespace

TEST(EncoderRegistry, PositionalPathAndKeyValues) {
  EXPECT_TRUE(parsed("echo-test").values.empty());
  auto a = parsed("echo-test:/models/all-MiniLM-L6-v2");
  EXPECT_EQ(a.values.at(""), "/models/all-MiniLM-L6-v2");
  auto b = parsed("echo-test:/models/m,quant=int8");
  EXPECT_EQ(b.values.at(""), "/models/m");
  EXPECT_EQ(b.values.at("quant"), "int8");
  auto c = parsed("echo-test:dir=/m,max_length=128");
  EXPECT_EQ(c.values.count(""), 0u);
  EXPECT_EQ(c.values.at("dir"), "/m");
  EXPECT_EQ(c.values.at("max_length"), "128");
  auto d = parsed("echo-test:http://127.0.0.1:8080/v1/embeddings?x=y,model=m");
  EXPECT_EQ(d.values.at(""), "http://127.0.0.1:8080/v1/embeddings?x=y");
  EXPECT_EQ(d.values.at("model"), "m");
  auto e = parsed("echo-test:dim=256");
  EXPECT_EQ(e.values.at("dim"), "256");
}

TEST(EncoderRegistry, UnknownEncoderNamesTheKnownOnes) {
  try {
    create_encoder("no-such-encoder");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown encoder 'no-such-encoder'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("echo-test"), std::string::npos) << e.what();
  }
}
