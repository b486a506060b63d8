// safetensors files: round trips, the on-disk layout, truncated and malformed files, typed access, CSR
// helpers and atomic writes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "xdrec/tensor_io.h"

namespace fs = std::filesystem;
using namespace xdrec;
using namespace std::string_literals;

namespace {

using xdrec::testing_util::throws_error;

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("xdrec_tio_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  size_t entries() const {
    return size_t(std::distance(fs::directory_iterator(path), fs::directory_iterator()));
  }
};

// Writes a safetensors file by hand: 8-byte little-endian header length, header, data.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

TensorMap sample() {
  TensorMap t;
  const float m[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f};
  const uint32_t u[3] = {7, 0, 4000000000u};
  const uint64_t w[2] = {1, 0xfedcba9876543210ULL};
  t["a.matrix"] = Tensor::from_f32({2, 3}, m);
  t["b.empty"] = Tensor::from_f32({0}, nullptr);
  t["c.u32"] = Tensor::from_u32({3}, u);
  t["d.u64"] = Tensor::from_u64({2}, w);
  return t;
}

}  // namespace

TEST(TensorIo, RoundTripKeepsDtypesShapesBytesAndMetadata) {
  TempDir d;
  const TensorMap t = sample();
  save_safetensors(d.file("x.safetensors"), t, {{"format", "xdrec"}, {"note", "a \"quoted\" value"}});
  std::map<std::string, std::string> meta;
  TensorMap r = load_safetensors(d.file("x.safetensors"), &meta);
  ASSERT_EQ(r.size(), t.size());
  for (auto& [name, x] : t) {
    ASSERT_TRUE(r.count(name)) << name;
    EXPECT_EQ(r[name].dtype, x.dtype) << name;
    EXPECT_EQ(r[name].shape, x.shape) << name;
    EXPECT_EQ(r[name].bytes, x.bytes) << name;
  }
  EXPECT_EQ(meta.at("format"), "xdrec");
  EXPECT_EQ(meta.at("note"), "a \"quoted\" value");
  Matrix m = r["a.matrix"].to_matrix("a.matrix");
  EXPECT_EQ(m.rows, 2u);
  EXPECT_EQ(m.cols, 3u);
  EXPECT_EQ(m(1, 0), 3.25f);
  EXPECT_EQ(r["c.u32"].to_u32("c.u32")[2], 4000000000u);
  EXPECT_EQ(r["d.u64"].to_u64("d.u64")[1], 0xfedcba9876543210ULL);
  EXPECT_TRUE(r["b.empty"].to_f32("b.empty").empty());
  EXPECT_EQ(d.entries(), 1u) << "no temporary file is left behind";
}

TEST(TensorIo, FileFollowsTheSafetensorsLayout) {
  TempDir d;
  const TensorMap t = sample();
  save_safetensors(d.file("x.safetensors"), t);
  const std::string bytes = read_file(d.file("x.safetensors"));
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ((8 + n) % 8, 0u) << "data starts 8-byte aligned";
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_FALSE(header.contains("__metadata__")) << "no metadata was given";
  uint64_t data_bytes = 0;
  const std::map<std::string, std::string> dtype = {
      {"a.matrix", "F32"}, {"b.empty", "F32"}, {"c.u32", "U32"}, {"d.u64", "U64"}};
  for (auto& [name, x] : t) {
    auto& e = header.at(name);
    EXPECT_EQ(e.at("dtype").get<std::string>(), dtype.at(name));
    EXPECT_EQ(e.at("shape").get<std::vector<int64_t>>(), x.shape);
    auto off = e.at("data_offsets").get<std::vector<uint64_t>>();
    ASSERT_EQ(off.size(), 2u);
    ASSERT_EQ(off[1] - off[0], x.bytes.size());
    EXPECT_EQ(bytes.substr(8 + n + off[0], x.bytes.size()),
              std::string(reinterpret_cast<const char*>(x.bytes.data()), x.bytes.size()))
        << name;
    data_bytes += x.bytes.size();
  }
  EXPECT_EQ(bytes.size(), 8 + n + data_bytes) << "no gaps or trailing bytes";
}

TEST(TensorIo, EveryTruncationIsAnError) {
  TempDir d;
  save_safetensors(d.file("x.safetensors"), sample(), {{"k", "v"}});
  const std::string good = read_file(d.file("x.safetensors"));
  for (size_t cut = 0; cut < good.size(); ++cut) {
    std::ofstream(d.file("cut.safetensors"), std::ios::binary | std::ios::trunc) << good.substr(0, cut);
    EXPECT_TRUE(throws_error([&] { load_safetensors(d.file("cut.safetensors")); }, {"cut.safetensors"}))
        << "cut at " << cut << " of " << good.size();
  }
  write_file_atomic(d.file("cut.safetensors"), good.substr(0, good.size() - 1));
  EXPECT_TRUE(throws_error([&] { load_safetensors(d.file("cut.safetensors")); }, {"truncated"}));
  write_file_atomic(d.file("cut.safetensors"), good.substr(0, 5));
  EXPECT_TRUE(throws_error([&] { load_safetensors(d.file("cut.safetensors")); }, {"truncated"}));
}

TEST(TensorIo, MalformedFilesAreErrors) {
  TempDir d;
  const std::string p = d.file("m.safetensors");
  auto load_raw = [&](const std::string& content) {
    write_file_atomic(p, content);
    return [&] { load_safetensors(p); };
  };
  EXPECT_TRUE(
      throws_error([&] { load_safetensors(d.file("absent.safetensors")); }, {"cannot open", "absent"}));
  // Header length far beyond the file (must not try to allocate it).
  std::string huge(8, '\xff');
  EXPECT_TRUE(throws_error(load_raw(huge + "{}"), {"exceeds the file size"}));
  EXPECT_TRUE(throws_error(load_raw(raw_file("{not json", "")), {p, "malformed"}));
  EXPECT_TRUE(throws_error(load_raw(raw_file("[1,2]", "")), {"not a JSON object"}));
  const std::string four(4, '\0');
  EXPECT_TRUE(
      throws_error(load_raw(raw_file(R"({"t":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", four)),
                   {"unsupported tensor dtype", "BF16"}));
  EXPECT_TRUE(
      throws_error(load_raw(raw_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four)),
                   {"'t'", "does not match its shape"}));
  EXPECT_TRUE(
      throws_error(load_raw(raw_file(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", four)),
                   {"'t'", "bad data_offsets"}));
  EXPECT_TRUE(
      throws_error(load_raw(raw_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", four)),
                   {"'t'", "past the end"}));
  EXPECT_TRUE(
      throws_error(load_raw(raw_file(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", four)), {"'t'"}));
  EXPECT_TRUE(throws_error(
      load_raw(raw_file(R"({"t":{"dtype":"F32","shape":"x","data_offsets":[0,4]}})", four)), {"'t'"}));
  write_file_atomic(
      p, raw_file(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"k":3}})", four));
  std::map<std::string, std::string> meta;
  EXPECT_TRUE(throws_error([&] { load_safetensors(p, &meta); }, {p, "__metadata__", "'k'"}));
  // A well-formed hand-written file loads.
  write_file_atomic(p, raw_file(R"({"t":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}})", "\x05\0\0\0"s));
  EXPECT_EQ(load_safetensors(p).at("t").to_u32("t"), std::vector<uint32_t>{5});
}

TEST(TensorIo, TypedAccessChecksDtypeAndShape) {
  const TensorMap t = sample();
  EXPECT_TRUE(throws_error([&] { t.at("c.u32").to_f32("c.u32"); }, {"'c.u32'", "F32", "U32"}));
  EXPECT_TRUE(throws_error([&] { t.at("a.matrix").to_u64("a.matrix"); }, {"'a.matrix'"}));
  EXPECT_TRUE(throws_error([&] { t.at("c.u32").to_matrix("c.u32"); }, {"'c.u32'", "2 dimensions"}));
  EXPECT_TRUE(throws_error([&] { get_tensor(t, "nope"); }, {"no tensor 'nope'"}));
  EXPECT_EQ(get_tensor(t, "a.matrix").numel(), 6u);
  EXPECT_EQ(Tensor::from_f32({}, std::vector<float>{2.0f}.data()).numel(), 1u) << "a scalar has one element";
}

TEST(TensorIo, CsrRoundTripAndValidation) {
  std::vector<uint32_t> r{0, 0, 2, 2, 2}, c{1, 3, 0, 3, 3};
  std::vector<float> v{1, 2, 3, 4, 5};
  const Csr m = Csr::from_triplets(4, 5, r, c, v);
  TempDir d;
  TensorMap t;
  put_csr(t, "x", m);
  save_safetensors(d.file("c.safetensors"), t);
  Csr b = get_csr(load_safetensors(d.file("c.safetensors")), "x");
  EXPECT_EQ(b.n_rows, 4u);
  EXPECT_EQ(b.n_cols, 5u);
  EXPECT_EQ(b.indptr, m.indptr);
  EXPECT_EQ(b.indices, m.indices);
  EXPECT_EQ(b.values, m.values);
  EXPECT_EQ(b.values, (std::vector<float>{1, 2, 3, 9}));  // the repeated (2, 3) is summed

  TensorMap bad = t;
  std::vector<uint32_t> idx{1, 3, 0, 7};  // column 7 >= 5
  bad["x.indices"] = Tensor::from_u32({4}, idx.data());
  EXPECT_TRUE(throws_error([&] { get_csr(bad, "x"); }, {"'x'", "column out of range"}));
  bad = t;
  std::vector<uint64_t> ptr{0, 2, 2, 4};  // one row short
  bad["x.indptr"] = Tensor::from_u64({4}, ptr.data());
  EXPECT_TRUE(throws_error([&] { get_csr(bad, "x"); }, {"'x'", "inconsistent"}));
  bad = t;
  bad.erase("x.values");
  EXPECT_TRUE(throws_error([&] { get_csr(bad, "x"); }, {"x.values"}));
  bad = t;
  std::vector<uint32_t> shape3{4, 5, 1};
  bad["x.shape"] = Tensor::from_u32({3}, shape3.data());
  EXPECT_TRUE(throws_error([&] { get_csr(bad, "x"); }, {"x.shape"}));
}

TEST(TensorIo, AtomicWriteNeverLeavesAPartialFile) {
  TempDir d;
  const std::string p = d.file("f.bin");
  write_file_atomic(p, "first version");
  EXPECT_THROW(write_file_atomic(p,
                                 [](std::FILE* f) {
                                   std::fputs("half", f);
                                   throw Error("writer failed");
                                 }),
               Error);
  EXPECT_EQ(read_file(p), "first version");
  EXPECT_EQ(d.entries(), 1u) << "the temporary file is removed";
  write_file_atomic(p, "second");
  EXPECT_EQ(read_file(p), "second");
  EXPECT_THROW(save_safetensors(d.file("no/such/dir/x.safetensors"), sample()), Error);
  EXPECT_EQ(d.entries(), 1u);
}
