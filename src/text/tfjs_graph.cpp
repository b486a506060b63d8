// TensorFlow.js graph model reader.
#include "text/tfjs_graph.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "xdrec/common.h"

namespace xdrec::tfjs {

namespace fs = std::filesystem;

size_t Tensor::size() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

size_t dtype_bytes(const std::string& dtype, const std::string& where) {
  if (dtype == "float32" || dtype == "int32") return 4;
  if (dtype == "bool" || dtype == "uint8") return 1;
  if (dtype == "float16" || dtype == "uint16") return 2;
  throw Error(where + ": unsupported weight dtype '" + dtype + "'");
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  float v;
  if (exp == 0)
    v = std::ldexp(static_cast<float>(mant), -24);
  else if (exp == 31)
    v = mant ? NAN : INFINITY;
  else
    v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

std::string read_binary(const fs::path& p, const std::string& source) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(source + ": cannot open weight shard " + p.string());
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  std::string data(size > 0 ? static_cast<size_t>(size) : 0, '\0');
  if (size > 0 && !in.read(data.data(), size))
    throw Error(source + ": cannot read weight shard " + p.string());
  return data;
}

}  // namespace

Graph Graph::load(const std::string& model_json) {
  Graph g;
  g.source_ = model_json;
  const std::string& src = g.source_;
  std::ifstream in(model_json, std::ios::binary);
  if (!in) throw Error(src + ": cannot open the model file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(src + ": not valid JSON (" + e.what() + ")");
  }
  try {
    const auto& topo = j.at("modelTopology");
    for (const auto& n : topo.at("node")) {
      Node node;
      node.name = n.at("name").get<std::string>();
      node.op = n.at("op").get<std::string>();
      if (n.contains("input"))
        for (const auto& x : n["input"]) node.inputs.push_back(x.get<std::string>());
      node.attr = n.value("attr", nlohmann::json::object());
      g.node_index_[node.name] = g.nodes_.size();
      g.nodes_.push_back(std::move(node));
    }
    const auto& manifest = j.at("weightsManifest");
    const fs::path dir = fs::path(model_json).parent_path();
    for (const auto& group : manifest) {
      // The group's bytes: every shard, in order.
      std::string bytes;
      for (const auto& p : group.at("paths")) {
        const fs::path shard = dir / p.get<std::string>();
        if (!fs::is_regular_file(shard))
          throw Error(src + ": weight shard " + shard.string() + " is missing");
        bytes += read_binary(shard, src);
      }
      size_t need = 0;
      struct Pending {
        nlohmann::json spec;
        size_t offset, bytes;
      };
      std::vector<Pending> pending;
      for (const auto& w : group.at("weights")) {
        std::vector<int64_t> shape;
        for (const auto& d : w.at("shape")) {
          const int64_t v = d.get<int64_t>();
          if (v < 0 || v > (int64_t{1} << 31))
            throw Error(src + ": weight '" + w.at("name").get<std::string>() + "' has a bad dimension");
          shape.push_back(v);
        }
        size_t count = 1;
        for (int64_t d : shape) count *= static_cast<size_t>(d);
        const std::string dtype = w.at("dtype").get<std::string>();
        size_t elem = dtype_bytes(dtype, src);
        if (w.contains("quantization"))
          elem = dtype_bytes(w["quantization"].at("dtype").get<std::string>(), src);
        pending.push_back({w, need, count * elem});
        need += count * elem;
      }
      if (bytes.size() != need)
        throw Error(src + ": the weight shards hold " + std::to_string(bytes.size()) +
                    " bytes but the manifest " + "describes " + std::to_string(need) +
                    " (a truncated or wrong shard)");
      g.weights_hash_ =
          fnv1a64(bytes.data(), bytes.size(), g.weights_hash_ ? g.weights_hash_ : 0xcbf29ce484222325ULL);
      g.weights_bytes_ += bytes.size();
      for (const auto& pw : pending) {
        const auto& w = pw.spec;
        Tensor t;
        t.name = w.at("name").get<std::string>();
        t.dtype = w.at("dtype").get<std::string>();
        for (const auto& d : w.at("shape")) t.shape.push_back(d.get<int64_t>());
        const size_t count = t.size();
        const char* p = bytes.data() + pw.offset;
        if (w.contains("quantization")) {
          const auto& q = w["quantization"];
          const std::string qd = q.at("dtype").get<std::string>();
          t.dtype = t.dtype == "int32" ? "int32" : "float32";
          std::vector<float> v(count);
          if (qd == "float16") {
            for (size_t k = 0; k < count; ++k) {
              uint16_t h;
              std::memcpy(&h, p + 2 * k, 2);
              v[k] = half_to_float(h);
            }
          } else if (qd == "uint8" || qd == "uint16") {
            const float scale = q.at("scale").get<float>(), mn = q.at("min").get<float>();
            for (size_t k = 0; k < count; ++k) {
              uint32_t u = 0;
              if (qd == "uint8") {
                u = static_cast<unsigned char>(p[k]);
              } else {
                uint16_t h;
                std::memcpy(&h, p + 2 * k, 2);
                u = h;
              }
              v[k] = static_cast<float>(u) * scale + mn;
            }
          } else {
            throw Error(src + ": weight '" + t.name + "' has unsupported quantization dtype '" + qd + "'");
          }
          if (t.dtype == "int32") {
            t.i.resize(count);
            for (size_t k = 0; k < count; ++k) t.i[k] = static_cast<int32_t>(std::lround(v[k]));
          } else {
            t.f = std::move(v);
          }
        } else if (t.dtype == "float32") {
          t.f.resize(count);
          std::memcpy(t.f.data(), p, count * 4);
        } else if (t.dtype == "int32") {
          t.i.resize(count);
          std::memcpy(t.i.data(), p, count * 4);
        } else if (t.dtype == "bool" || t.dtype == "uint8") {
          t.i.resize(count);
          for (size_t k = 0; k < count; ++k) t.i[k] = static_cast<unsigned char>(p[k]);
          t.dtype = "int32";
        } else {
          throw Error(src + ": weight '" + t.name + "' has unsupported dtype '" + t.dtype + "'");
        }
        g.weights_[t.name] = std::move(t);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(src + ": not a TensorFlow.js graph model (" + e.what() + ")");
  }
  return g;
}

const Node* Graph::find_node(const std::string& name) const {
  auto it = node_index_.find(name);
  return it == node_index_.end() ? nullptr : &nodes_[it->second];
}

const Tensor& Graph::weight(const std::string& name, const std::vector<int64_t>& shape) const {
  auto it = weights_.find(name);
  if (it == weights_.end()) throw Error(source_ + ": the model has no weight '" + name + "'");
  if (!shape.empty() && it->second.shape != shape)
    throw Error(source_ + ": weight '" + name + "' has shape " + shape_str(it->second.shape) + ", expected " +
                shape_str(shape));
  return it->second;
}

float Graph::scalar_float(const std::string& name) const {
  const Tensor& t = weight(name);
  if (t.size() != 1 || t.f.size() != 1)
    throw Error(source_ + ": weight '" + name + "' is not a float scalar");
  return t.f[0];
}

int64_t Graph::scalar_int(const std::string& name) const {
  const Tensor& t = weight(name);
  if (t.size() != 1 || t.i.size() != 1)
    throw Error(source_ + ": weight '" + name + "' is not an integer scalar");
  return t.i[0];
}

std::string Graph::describe() const {
  std::string s;
  for (const auto& n : nodes_) {
    if (n.op == "Const") continue;
    s += n.op + " " + n.name + " <-";
    for (const auto& x : n.inputs) s += " " + x;
    s += "\n";
  }
  return s;
}

}  // namespace xdrec::tfjs
