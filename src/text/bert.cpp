// BERT-family sentence encoder read from a Hugging Face / sentence-transformers model folder:
// config.json, model.safetensors, tokenizer.json or vocab.txt (+ tokenizer_config.json), modules.json,
// 1_Pooling/config.json and sentence_bert_config.json.
//
// Spec: "bert:DIR" or "bert:dir=DIR" with optional settings
//   max_length=N       tokens per text including [CLS] and [SEP] (0: the model's own limit)
//   pooling=auto|mean|cls|max|mean_sqrt_len|weightedmean|lasttoken   (auto: 1_Pooling/config.json, else mean)
//   normalize=auto|true|false   L2-normalise the output (auto: a Normalize module in modules.json)
//   quant=none|int8    int8: weights quantised per output channel (symmetric), activations in float
//
// The batch is processed without padding: the tokens of all texts are stacked for the dense layers and each
// text attends only to its own tokens, which is what padding to the longest text with an attention mask
// computes, without the work on padding. Every vector is independent of the thread count and of the other
// texts in the batch.
#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "text/transformer_ops.h"
#include "text/wordpiece.h"
#include "xdrec/encoder.h"

namespace xdrec::text {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ops::aligned_vector;

// A fast 64-bit hash of bytes (8 at a time) for fingerprinting weights; stable across runs and machines of
// the same byte order.
uint64_t hash_bytes(const void* data, size_t n, uint64_t h) {
  const auto* b = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, b + i, 8);
    h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
  }
  return fnv1a64(b + i, n - i, h);
}

json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open '" + path + "'");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw Error(path + ": malformed JSON: " + e.what());
  }
}

// ---------------------------------------------------------------------------------------------------------
// A safetensors file read tensor by tensor, in pieces, converting F32 / F16 / BF16 to float and hashing the
// bytes it reads. Loading thus never holds the whole file besides the packed model (the core reader loads
// every tensor at once), which keeps the peak memory of the int8 mode near the size of its weights.
class TensorFile {
 public:
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte range relative to the data section
    size_t numel() const {
      size_t n = 1;
      for (auto d : shape) n *= size_t(d);
      return n;
    }
  };

  explicit TensorFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error("cannot open weights file '" + path + "'");
    const off_t size = ::lseek(fd_, 0, SEEK_END);
    check(size >= 8, path + ": truncated safetensors file (" + std::to_string(size) + " bytes)");
    unsigned char len[8];
    read_at(len, 8, 0);
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
    check(n <= uint64_t(size) - 8, path + ": header length " + std::to_string(n) +
                                       " exceeds the file size (truncated safetensors file?)");
    std::string h(n, '\0');
    read_at(h.data(), n, 8);
    json header;
    try {
      header = json::parse(h);
    } catch (const json::exception& e) {
      throw Error(path + ": malformed safetensors header: " + e.what());
    }
    check(header.is_object(), path + ": safetensors header is not a JSON object");
    data_start_ = 8 + n;
    const uint64_t data_size = uint64_t(size) - data_start_;
    for (auto& [name, info] : header.items()) {
      if (name == "__metadata__") continue;
      try {
        Entry e;
        e.dtype = info.at("dtype").get<std::string>();
        e.shape = info.at("shape").get<std::vector<int64_t>>();
        for (auto d : e.shape) check(d >= 0, path + ": tensor '" + name + "' has a negative dimension");
        auto offs = info.at("data_offsets").get<std::vector<uint64_t>>();
        check(offs.size() == 2 && offs[0] <= offs[1], path + ": tensor '" + name + "' has bad data_offsets");
        check(offs[1] <= data_size, path + ": tensor '" + name +
                                        "' extends past the end of the file (truncated safetensors file?)");
        e.begin = offs[0];
        e.end = offs[1];
        const size_t es = elem_size(e.dtype);
        if (es && e.end - e.begin != e.numel() * es)
          throw Error(path + ": tensor '" + name + "' byte range does not match its shape");
        entries_.emplace(name, std::move(e));
      } catch (const json::exception& ex) {
        throw Error(path + ": tensor '" + name + "': " + ex.what());
      }
    }
  }
  ~TensorFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  TensorFile(const TensorFile&) = delete;
  TensorFile& operator=(const TensorFile&) = delete;

  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  const std::string& path() const { return path_; }

  // The tensor `name`, checked to have the expected shape and a float dtype.
  const Entry& get(const std::string& name, std::vector<int64_t> shape) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw Error(path_ + ": missing tensor '" + name + "'");
    const Entry& e = it->second;
    if (e.shape != shape)
      throw Error(path_ + ": tensor '" + name + "' has shape " + shape_str(e.shape) + ", expected " +
                  shape_str(shape));
    if (!elem_size(e.dtype))
      throw Error(path_ + ": tensor '" + name + "' has dtype " + e.dtype + " (supported: F32, F16, BF16)");
    return e;
  }

  // Elements [e0, e1) of a tensor as floats.
  void read(const Entry& e, size_t e0, size_t e1, float* out) {
    const size_t es = elem_size(e.dtype);
    const uint64_t off = data_start_ + e.begin + e0 * es;
    const size_t n = e1 - e0;
    if (es == 4) {
      read_at(out, n * 4, off);
      hash_ = hash_bytes(out, n * 4, hash_);
      return;
    }
    buf_.resize(n * 2);
    read_at(buf_.data(), n * 2, off);
    hash_ = hash_bytes(buf_.data(), n * 2, hash_);
    const uint16_t* src = buf_.data();
    if (e.dtype == "BF16") {
      for (size_t i = 0; i < n; ++i) {
        const uint32_t bits = uint32_t(src[i]) << 16;
        std::memcpy(out + i, &bits, 4);
      }
    } else {
      for (size_t i = 0; i < n; ++i) out[i] = half_to_float(src[i]);
    }
  }
  std::vector<float> read_all(const Entry& e) {
    std::vector<float> v(e.numel());
    read(e, 0, v.size(), v.data());
    return v;
  }
  uint64_t hash() const { return hash_; }

 private:
  static size_t elem_size(const std::string& dtype) {
    if (dtype == "F32") return 4;
    if (dtype == "F16" || dtype == "BF16") return 2;
    return 0;
  }
  static std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  }
  static float half_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0x1F) {
      bits = sign | 0x7F800000u | (mant << 13);
    } else if (exp == 0) {
      if (mant == 0) {
        bits = sign;
      } else {  // subnormal: normalise
        int e = -1;
        do {
          ++e;
          mant <<= 1;
        } while (!(mant & 0x400));
        bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3FF) << 13;
      }
    } else {
      bits = sign | (exp + 112) << 23 | mant << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  void read_at(void* dst, size_t n, uint64_t off) const {
    auto* p = static_cast<char*>(dst);
    while (n > 0) {
      const ssize_t got = ::pread(fd_, p, n, off_t(off));
      if (got <= 0) throw Error(path_ + ": read failed (truncated safetensors file?)");
      p += got;
      n -= size_t(got);
      off += uint64_t(got);
    }
  }

  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  std::map<std::string, Entry> entries_;
  std::vector<uint16_t> buf_;
  uint64_t hash_ = 0xcbf29ce484222325ULL;
};

enum class Pool { kCls, kMean, kMax, kMeanSqrtLen, kWeightedMean, kLastToken };

struct Layer {
  ops::Linear qkv, out, up, down;
  std::vector<float> ln1_g, ln1_b, ln2_g, ln2_b;
};

}  // namespace

class BertEncoder : public TextEncoder {
 public:
  explicit BertEncoder(const Spec& spec) {
    ParamSet ps("bert");
    ps.add("dir", &dir_, "", {}, "model folder (Hugging Face / sentence-transformers layout)");
    ps.add("max_length", &max_length_, 0, 0, 1 << 20,
           "tokens per text incl. [CLS]/[SEP]; 0: the model's limit");
    ps.add("pooling", &pooling_, "auto",
           {"auto", "mean", "cls", "max", "mean_sqrt_len", "weightedmean", "lasttoken"},
           "pooling of the token vectors; auto: the model's 1_Pooling/config.json");
    ps.add("normalize", &normalize_, "auto", {"auto", "true", "false"},
           "L2-normalise the output; auto: as modules.json says");
    ps.add("quant", &quant_, "none", {"none", "int8"}, "int8: per-output-channel int8 weights");
    auto values = spec.values;
    if (auto it = values.find(""); it != values.end()) {
      // "bert:dir=/a/b" arrives here whole when the path holds a '/'.
      std::string d = it->second.rfind("dir=", 0) == 0 ? it->second.substr(4) : it->second;
      values.erase(it);
      check(!values.count("dir"),
            "bert: the model folder is given twice (as the first argument and as dir=)");
      values["dir"] = d;
    }
    ps.apply(values);
    check(!dir_.empty(), "bert: no model folder given (use bert:/path/to/model or bert:dir=/path/to/model)");
    load();
  }

  std::string name() const override { return "bert"; }
  std::string spec() const override {
    return "bert:dir=" + dir_ + ",max_length=" + std::to_string(seq_len_) +
           ",normalize=" + (normalize_out_ ? "true" : "false") + ",pooling=" + pooling_resolved_ +
           ",quant=" + quant_;
  }
  size_t dim() const override { return hidden_ * pools_.size(); }
  std::string fingerprint() const override { return fingerprint_; }

  std::vector<int32_t> token_ids(const std::string& text) const override {
    return tokenizer_->encode(text, size_t(seq_len_));
  }

  Matrix encode(std::span<const std::string> texts, int threads) const override {
    threads = resolve_threads(threads);
    const size_t n = texts.size();
    Matrix out(n, dim());
    // Chunks of texts bound the memory of the token ids; each chunk is split into groups for the threads.
    constexpr size_t kChunkTexts = 2048;
    std::vector<std::vector<int32_t>> ids;
    for (size_t c0 = 0; c0 < n; c0 += kChunkTexts) {
      const size_t c1 = std::min(n, c0 + kChunkTexts);
      ids.assign(c1 - c0, {});
      parallel_for(c1 - c0, threads, 16, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) ids[i] = tokenizer_->encode(texts[c0 + i], size_t(seq_len_));
      });
      forward_chunk(ids, out.row(c0), threads);
    }
    return out;
  }

 private:
  void load();
  void load_config(const std::string& path);
  void load_pooling();
  void load_weights(const std::string& path);
  // Vectors of the texts `ids` into out (one row of dim() values each).
  void forward_chunk(const std::vector<std::vector<int32_t>>& ids, float* out, int threads) const;
  // Texts [s0, s1) of ids, their token rows split over `threads`.
  void forward_group(const std::vector<std::vector<int32_t>>& ids, size_t s0, size_t s1, float* out,
                     int threads) const;
  void pool(const float* x, size_t L, float* dst) const;

  // Settings.
  std::string dir_, pooling_, normalize_, quant_;
  int max_length_ = 0;
  // Model.
  size_t hidden_ = 0, layers_n_ = 0, heads_ = 0, head_dim_ = 0, inter_ = 0, vocab_ = 0, max_pos_ = 0,
         type_vocab_ = 0;
  float eps_ = 1e-12f;
  ops::Activation act_ = ops::Activation::kGelu;
  int seq_len_ = 0;
  std::vector<Pool> pools_;
  std::string pooling_resolved_;
  bool normalize_out_ = false;
  bool int8_ = false;
  std::unique_ptr<WordPieceTokenizer> tokenizer_;
  // Weights.
  aligned_vector<float> word_;      // vocab x hidden (float mode)
  aligned_vector<int8_t> word_q_;   // vocab x hidden (int8 mode)
  std::vector<float> word_scale_;   // vocab (int8 mode)
  std::vector<float> pos_, type0_;  // max_pos x hidden; the token-type-0 row
  std::vector<float> emb_ln_g_, emb_ln_b_;
  std::vector<Layer> layers_;
  std::string fingerprint_;
};

void BertEncoder::load() {
  const fs::path d(dir_);
  if (!fs::is_directory(d))
    throw Error("bert: model folder '" + dir_ + "' does not exist or is not a folder");
  dir_ = fs::absolute(d).lexically_normal().string();
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  int8_ = quant_ == "int8";
  const std::string config = (fs::path(dir_) / "config.json").string();
  if (!fs::exists(config)) throw Error("bert: model folder '" + dir_ + "' has no config.json");
  load_config(config);
  const std::string weights = (fs::path(dir_) / "model.safetensors").string();
  if (!fs::exists(weights)) {
    std::string hint;
    if (fs::exists(fs::path(dir_) / "pytorch_model.bin"))
      hint = " (it has pytorch_model.bin; convert it to safetensors)";
    throw Error("bert: model folder '" + dir_ + "' has no model.safetensors" + hint);
  }
  tokenizer_ = std::make_unique<WordPieceTokenizer>(WordPieceTokenizer::from_dir(dir_));
  // sentence-transformers settings: the sequence length and lower-casing before the tokenizer.
  const std::string sbert = (fs::path(dir_) / "sentence_bert_config.json").string();
  size_t st_len = 0;
  if (fs::exists(sbert)) {
    const json j = read_json_file(sbert);
    if (j.contains("max_seq_length") && j["max_seq_length"].is_number_integer())
      st_len = j["max_seq_length"].get<size_t>();
    if (j.value("do_lower_case", false)) {
      WordPieceConfig cfg = tokenizer_->config();
      cfg.lowercase_input = true;
      std::vector<std::string> vocab(tokenizer_->vocab_size());
      for (size_t i = 0; i < vocab.size(); ++i) vocab[i] = tokenizer_->piece(int32_t(i));
      tokenizer_ = std::make_unique<WordPieceTokenizer>(std::move(vocab), std::move(cfg));
    }
  }
  check(tokenizer_->vocab_size() <= vocab_,
        "bert: the tokenizer of '" + dir_ + "' has " + std::to_string(tokenizer_->vocab_size()) +
            " tokens but the model only " + std::to_string(vocab_) + " embeddings");
  size_t len = st_len ? st_len : max_pos_;
  if (!st_len && tokenizer_->config().model_max_length)
    len = std::min(len, tokenizer_->config().model_max_length);
  if (max_length_ > 0) len = size_t(max_length_);
  check(len <= max_pos_, "bert: max_length " + std::to_string(len) + " exceeds the model's " +
                             std::to_string(max_pos_) + " positions (max_position_embeddings in " + config +
                             ")");
  check(len >= 2, "bert: max_length must be at least 2");
  seq_len_ = int(len);
  load_pooling();
  load_weights(weights);
}

void BertEncoder::load_config(const std::string& path) {
  const json c = read_json_file(path);
  check(c.is_object(), path + ": expected a JSON object");
  std::string type = c.value("model_type", std::string());
  if (type.empty() && c.contains("architectures") && c["architectures"].is_array())
    for (const auto& a : c["architectures"])
      if (a.is_string() && a.get<std::string>().rfind("Bert", 0) == 0) type = "bert";
  if (type != "bert")
    throw Error(path + ": unknown architecture '" + (type.empty() ? std::string("(no model_type)") : type) +
                "' (supported: bert)");
  auto get = [&](const char* key) -> size_t {
    if (!c.contains(key) || !c[key].is_number_integer() || c[key].get<int64_t>() <= 0)
      throw Error(path + ": '" + key + "' is missing or not a positive integer");
    return c[key].get<size_t>();
  };
  hidden_ = get("hidden_size");
  layers_n_ = get("num_hidden_layers");
  heads_ = get("num_attention_heads");
  inter_ = get("intermediate_size");
  vocab_ = get("vocab_size");
  max_pos_ = get("max_position_embeddings");
  type_vocab_ = c.contains("type_vocab_size") ? get("type_vocab_size") : 2;
  check(hidden_ % heads_ == 0, path + ": hidden_size " + std::to_string(hidden_) +
                                   " is not a multiple of num_attention_heads " + std::to_string(heads_));
  head_dim_ = hidden_ / heads_;
  if (c.contains("layer_norm_eps") && c["layer_norm_eps"].is_number())
    eps_ = c["layer_norm_eps"].get<float>();
  const std::string act = c.value("hidden_act", std::string("gelu"));
  if (act == "gelu")
    act_ = ops::Activation::kGelu;
  else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast")
    act_ = ops::Activation::kGeluTanh;
  else if (act == "relu")
    act_ = ops::Activation::kRelu;
  else
    throw Error(path + ": hidden_act '" + act + "' is not supported (gelu, gelu_new, relu)");
  const std::string pet = c.value("position_embedding_type", std::string("absolute"));
  check(pet == "absolute", path + ": position_embedding_type '" + pet + "' is not supported (absolute)");
}

void BertEncoder::load_pooling() {
  bool normalize_module = false;
  std::string pool_cfg = (fs::path(dir_) / "1_Pooling" / "config.json").string();
  const std::string modules = (fs::path(dir_) / "modules.json").string();
  if (fs::exists(modules)) {
    const json m = read_json_file(modules);
    check(m.is_array(), modules + ": expected a JSON array");
    for (const auto& e : m) {
      const std::string type = e.value("type", std::string());
      if (type.find("Pooling") != std::string::npos)
        pool_cfg = (fs::path(dir_) / e.value("path", std::string()) / "config.json").string();
      else if (type.find("Normalize") != std::string::npos)
        normalize_module = true;
      else if (type.find("Dense") != std::string::npos)
        throw Error(modules + ": a Dense module after pooling is not supported");
    }
  }
  std::vector<std::string> modes;
  if (pooling_ != "auto") {
    modes = {pooling_};
  } else if (fs::exists(pool_cfg)) {
    const json p = read_json_file(pool_cfg);
    if (p.contains("pooling_mode") && p["pooling_mode"].is_string()) {
      std::string s = p["pooling_mode"].get<std::string>();
      modes = {s == "mean_tokens" ? "mean" : s == "cls_token" ? "cls" : s == "max_tokens" ? "max" : s};
    } else {
      // The order in which sentence-transformers concatenates the modes.
      const std::pair<const char*, const char*> keys[] = {
          {"pooling_mode_cls_token", "cls"},
          {"pooling_mode_max_tokens", "max"},
          {"pooling_mode_mean_tokens", "mean"},
          {"pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"},
          {"pooling_mode_weightedmean_tokens", "weightedmean"},
          {"pooling_mode_lasttoken", "lasttoken"}};
      for (auto& [k, name] : keys)
        if (p.value(k, false)) modes.push_back(name);
    }
    check(!modes.empty(), pool_cfg + ": no pooling mode is enabled");
  } else {
    modes = {"mean"};
  }
  pooling_resolved_.clear();
  for (const auto& m : modes) {
    Pool p;
    if (m == "cls")
      p = Pool::kCls;
    else if (m == "mean")
      p = Pool::kMean;
    else if (m == "max")
      p = Pool::kMax;
    else if (m == "mean_sqrt_len")
      p = Pool::kMeanSqrtLen;
    else if (m == "weightedmean")
      p = Pool::kWeightedMean;
    else if (m == "lasttoken")
      p = Pool::kLastToken;
    else
      throw Error(pool_cfg + ": pooling mode '" + m + "' is not supported");
    pools_.push_back(p);
    pooling_resolved_ += (pooling_resolved_.empty() ? "" : "+") + m;
  }
  normalize_out_ = normalize_ == "auto" ? normalize_module : normalize_ == "true";
}

void BertEncoder::load_weights(const std::string& path) {
  TensorFile f(path);
  std::string pre;
  if (f.has("embeddings.word_embeddings.weight"))
    pre = "";
  else if (f.has("bert.embeddings.word_embeddings.weight"))
    pre = "bert.";
  else
    throw Error(path +
                ": missing tensor 'embeddings.word_embeddings.weight' (with or without the 'bert.' prefix)");
  const int64_t H = int64_t(hidden_), I = int64_t(inter_);
  // LayerNorm parameters are named weight/bias, or gamma/beta in older checkpoints.
  auto ln = [&](const std::string& base, std::vector<float>& g, std::vector<float>& b) {
    const bool old = !f.has(pre + base + ".weight") && f.has(pre + base + ".gamma");
    g = f.read_all(f.get(pre + base + (old ? ".gamma" : ".weight"), {H}));
    b = f.read_all(f.get(pre + base + (old ? ".beta" : ".bias"), {H}));
  };
  auto tensor = [&](const std::string& name, std::vector<int64_t> shape) {
    return f.read_all(f.get(pre + name, std::move(shape)));
  };
  // Embeddings.
  const auto& we = f.get(pre + "embeddings.word_embeddings.weight", {int64_t(vocab_), H});
  if (!int8_) {
    word_.resize(vocab_ * hidden_);
    f.read(we, 0, word_.size(), word_.data());
  } else {
    word_q_.resize(vocab_ * hidden_);
    word_scale_.resize(vocab_);
    std::vector<float> rows;
    constexpr size_t kRows = 1024;
    for (size_t r0 = 0; r0 < vocab_; r0 += kRows) {
      const size_t r1 = std::min(vocab_, r0 + kRows);
      rows.resize((r1 - r0) * hidden_);
      f.read(we, r0 * hidden_, r1 * hidden_, rows.data());
      for (size_t r = r0; r < r1; ++r) {
        const float* src = rows.data() + (r - r0) * hidden_;
        float amax = 0;
        for (size_t c = 0; c < hidden_; ++c) amax = std::max(amax, std::fabs(src[c]));
        const float s = amax > 0 ? amax / 127.0f : 1.0f;
        word_scale_[r] = s;
        for (size_t c = 0; c < hidden_; ++c)
          word_q_[r * hidden_ + c] = int8_t(std::clamp(std::nearbyint(src[c] / s), -127.0f, 127.0f));
      }
    }
  }
  pos_ = tensor("embeddings.position_embeddings.weight", {int64_t(max_pos_), H});
  {
    auto t = tensor("embeddings.token_type_embeddings.weight", {int64_t(type_vocab_), H});
    type0_.assign(t.begin(), t.begin() + int64_t(hidden_));
  }
  ln("embeddings.LayerNorm", emb_ln_g_, emb_ln_b_);
  // Encoder layers. The query projection absorbs the attention scale 1/sqrt(head_dim).
  const float qscale = 1.0f / std::sqrt(float(head_dim_));
  layers_.resize(layers_n_);
  for (size_t l = 0; l < layers_n_; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    Layer& L = layers_[l];
    {
      std::vector<float> w(3 * hidden_ * hidden_), b(3 * hidden_);
      const char* names[3] = {"query", "key", "value"};
      for (size_t k = 0; k < 3; ++k) {
        auto wk = tensor(p + "attention.self." + names[k] + ".weight", {H, H});
        auto bk = tensor(p + "attention.self." + names[k] + ".bias", {H});
        const float s = k == 0 ? qscale : 1.0f;
        for (size_t i = 0; i < wk.size(); ++i) w[k * hidden_ * hidden_ + i] = wk[i] * s;
        for (size_t i = 0; i < hidden_; ++i) b[k * hidden_ + i] = bk[i] * s;
      }
      L.qkv = ops::Linear::from_out_in(w.data(), b.data(), 3 * hidden_, hidden_, int8_);
    }
    {
      auto w = tensor(p + "attention.output.dense.weight", {H, H});
      auto b = tensor(p + "attention.output.dense.bias", {H});
      L.out = ops::Linear::from_out_in(w.data(), b.data(), hidden_, hidden_, int8_);
    }
    ln(p + "attention.output.LayerNorm", L.ln1_g, L.ln1_b);
    {
      auto w = tensor(p + "intermediate.dense.weight", {I, H});
      auto b = tensor(p + "intermediate.dense.bias", {I});
      L.up = ops::Linear::from_out_in(w.data(), b.data(), inter_, hidden_, int8_);
    }
    {
      auto w = tensor(p + "output.dense.weight", {H, I});
      auto b = tensor(p + "output.dense.bias", {H});
      L.down = ops::Linear::from_out_in(w.data(), b.data(), hidden_, inter_, int8_);
    }
    ln(p + "output.LayerNorm", L.ln2_g, L.ln2_b);
  }
  // Fingerprint: the bytes of every tensor read, the tokenizer and every setting that changes the vectors.
  uint64_t h = f.hash();
  const std::string settings = spec() + "|eps=" + std::to_string(eps_) + "|act=" + std::to_string(int(act_)) +
                               "|layers=" + std::to_string(layers_n_) + "|heads=" + std::to_string(heads_);
  // The folder path is not part of the fingerprint: a copied model gives the same vectors.
  const std::string no_dir = settings.substr(settings.find(',') + 1);
  h = fnv1a64(no_dir.data(), no_dir.size(), h);
  const uint64_t th = tokenizer_->fingerprint();
  h = fnv1a64(&th, sizeof th, h);
  fingerprint_ = "bert-" + hex64(h);
}

void BertEncoder::pool(const float* x, size_t L, float* dst) const {
  const size_t H = hidden_;
  for (size_t k = 0; k < pools_.size(); ++k) {
    float* o = dst + k * H;
    switch (pools_[k]) {
      case Pool::kCls:
        std::copy(x, x + H, o);
        break;
      case Pool::kLastToken:
        std::copy(x + (L - 1) * H, x + L * H, o);
        break;
      case Pool::kMax:
        std::copy(x, x + H, o);
        for (size_t t = 1; t < L; ++t)
          for (size_t c = 0; c < H; ++c) o[c] = std::max(o[c], x[t * H + c]);
        break;
      case Pool::kMean:
      case Pool::kMeanSqrtLen:
      case Pool::kWeightedMean: {
        std::vector<double> acc(H, 0.0);
        double wsum = 0;
        for (size_t t = 0; t < L; ++t) {
          const double w = pools_[k] == Pool::kWeightedMean ? double(t + 1) : 1.0;
          wsum += w;
          for (size_t c = 0; c < H; ++c) acc[c] += w * x[t * H + c];
        }
        const double div = pools_[k] == Pool::kMeanSqrtLen ? std::sqrt(double(L)) : wsum;
        for (size_t c = 0; c < H; ++c) o[c] = float(acc[c] / div);
        break;
      }
    }
  }
  if (normalize_out_) {
    const size_t n = dim();
    double s = 0;
    for (size_t c = 0; c < n; ++c) s += double(dst[c]) * dst[c];
    const float inv = float(1.0 / std::max(std::sqrt(s), 1e-12));
    for (size_t c = 0; c < n; ++c) dst[c] *= inv;
  }
}

void BertEncoder::forward_chunk(const std::vector<std::vector<int32_t>>& ids, float* out, int threads) const {
  const size_t s0 = 0, s1 = ids.size();
  // Groups of consecutive texts of about kGroupTokens tokens, each run through the whole network by one
  // thread: the activations stay in cache and the threads never wait for each other. With too few groups to
  // keep the threads busy, one group runs with every layer split over the threads instead.
  constexpr size_t kGroupTokens = 256;
  std::vector<size_t> bounds{s0};
  for (size_t s = s0, t = 0; s < s1; ++s) {
    t += ids[s].size();
    if (t >= kGroupTokens && s + 1 < s1) {
      bounds.push_back(s + 1);
      t = 0;
    }
  }
  bounds.push_back(s1);
  const size_t groups = bounds.size() - 1;
  if (threads == 1 || groups >= 2 * size_t(threads)) {
    parallel_for(groups, threads, 1, [&](size_t g0, size_t g1) {
      for (size_t g = g0; g < g1; ++g) forward_group(ids, bounds[g], bounds[g + 1], out, 1);
    });
  } else {
    forward_group(ids, s0, s1, out, threads);
  }
}

void BertEncoder::forward_group(const std::vector<std::vector<int32_t>>& ids, size_t s0, size_t s1,
                                float* out, int threads) const {
  const size_t H = hidden_, H3 = 3 * hidden_, I = inter_;
  std::vector<size_t> off{0};
  for (size_t s = s0; s < s1; ++s) off.push_back(off.back() + ids[s].size());
  const size_t T = off.back(), nseq = s1 - s0;
  // Activations, not initialised (every value is written before it is read). The query/key/value rows are
  // double-buffered so that one layer's projections never overwrite what another thread still reads.
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  const auto buffer = [](size_t n) {
    return std::unique_ptr<float[], Free>(
        static_cast<float*>(::operator new[](std::max<size_t>(n, 1) * sizeof(float), std::align_val_t(64))));
  };
  auto xb = buffer(T * H), ctxb = buffer(T * H), h1b = buffer(T * H), upb = buffer(T * I);
  auto qkvb0 = buffer(T * H3), qkvb1 = threads > 1 ? buffer(T * H3) : nullptr;
  float *x = xb.get(), *ctx = ctxb.get(), *h1 = h1b.get(), *up = upb.get();
  float* qkv_buf[2] = {qkvb0.get(), threads > 1 ? qkvb1.get() : qkvb0.get()};

  // Each thread owns a contiguous range of token rows through the whole network; the threads meet once per
  // layer, after the query/key/value projections (attention reads the keys and values of every row of its
  // text). Every row is computed by the same operations whichever thread owns it.
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto body = [&](size_t tid, size_t nth) {
    const size_t r0 = T * tid / nth, r1 = T * (tid + 1) / nth, m = r1 - r0;
    auto step = [&](auto&& fn) {
      if (failed) return;
      try {
        fn();
      } catch (...) {
#pragma omp critical(xdrec_bert_error)
        {
          if (!error) error = std::current_exception();
          failed = true;
        }
      }
    };
    step([&] {  // embeddings and their layer norm
      size_t s = size_t(std::upper_bound(off.begin(), off.end(), r0) - off.begin()) - 1;
      for (size_t r = r0; r < r1; ++r) {
        while (r >= off[s + 1]) ++s;
        const size_t p = r - off[s], id = size_t(ids[s0 + s][p]);
        float* row = x + r * H;
        const float* pos = pos_.data() + p * H;
        if (!int8_) {
          const float* w = word_.data() + id * H;
          for (size_t c = 0; c < H; ++c) row[c] = w[c] + pos[c] + type0_[c];
        } else {
          const int8_t* w = word_q_.data() + id * H;
          const float sc = word_scale_[id];
          for (size_t c = 0; c < H; ++c) row[c] = float(w[c]) * sc + pos[c] + type0_[c];
        }
      }
      ops::layer_norm(x + r0 * H, m, H, H, emb_ln_g_.data(), emb_ln_b_.data(), eps_);
    });
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      float* qkv = qkv_buf[l % 2];
      step([&] {
        ops::GemmArgs g;
        g.a = x + r0 * H, g.lda = H, g.m = m, g.lin = &L.qkv, g.c = qkv + r0 * H3, g.ldc = H3;
        ops::gemm(g, 1);
      });
      if (nth > 1) {
#pragma omp barrier
      }
      step([&] {
        // Attention of the rows [r0, r1), text by text.
        static thread_local aligned_vector<float> scratch;
        for (size_t s = 0; s < nseq; ++s) {
          const size_t a = std::max(r0, off[s]), b = std::min(r1, off[s + 1]);
          if (a >= b) continue;
          const float* base = qkv + off[s] * H3;
          ops::attention(qkv + a * H3, b - a, base + H, base + 2 * H, H3, off[s + 1] - off[s], 0, heads_,
                         head_dim_, ctx + a * H, H, scratch);
        }
        // Output projection + residual, layer norm.
        ops::GemmArgs g;
        g.a = ctx + r0 * H, g.lda = H, g.m = m, g.lin = &L.out, g.c = h1 + r0 * H, g.ldc = H;
        g.epilogue = ops::Epilogue::kBiasResidual, g.residual = x + r0 * H, g.ldr = H;
        ops::gemm(g, 1, [&](size_t a, size_t b) {
          ops::layer_norm(h1 + (r0 + a) * H, b - a, H, H, L.ln1_g.data(), L.ln1_b.data(), eps_);
        });
        // Feed-forward: up projection with the activation; down projection + residual, layer norm.
        g = {};
        g.a = h1 + r0 * H, g.lda = H, g.m = m, g.lin = &L.up, g.c = up + r0 * I, g.ldc = I;
        g.epilogue = ops::Epilogue::kBiasActivation, g.act = act_;
        ops::gemm(g, 1);
        g = {};
        g.a = up + r0 * I, g.lda = I, g.m = m, g.lin = &L.down, g.c = x + r0 * H, g.ldc = H;
        g.epilogue = ops::Epilogue::kBiasResidual, g.residual = h1 + r0 * H, g.ldr = H;
        ops::gemm(g, 1, [&](size_t a, size_t b) {
          ops::layer_norm(x + (r0 + a) * H, b - a, H, H, L.ln2_g.data(), L.ln2_b.data(), eps_);
        });
      });
    }
    if (nth > 1) {
#pragma omp barrier
    }
    step([&] {
      for (size_t s = tid; s < nseq; s += nth)
        pool(x + off[s] * H, off[s + 1] - off[s], out + (s0 + s) * dim());
    });
  };
  if (threads <= 1) {
    body(0, 1);
  } else {
#pragma omp parallel num_threads(threads)
    body(size_t(omp_get_thread_num()), size_t(omp_get_num_threads()));
  }
  if (error) std::rethrow_exception(error);
}

XDREC_REGISTER_ENCODER(bert, "bert",
                       "BERT-family sentence encoder from a Hugging Face model folder (bert:DIR)",
                       BertEncoder);

}  // namespace xdrec::text
