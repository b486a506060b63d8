// Reader for TensorFlow.js graph models: model.json (the graph's nodes and the weights manifest) plus the
// binary weight shards it lists. Internal to the text module.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace xdrec::tfjs {

struct Node {
  std::string name, op;
  std::vector<std::string> inputs;
  nlohmann::json attr;  // as stored (an object; may be empty)
};

// A weight from the manifest, converted to float32 or int32 (quantised weights are dequantised).
struct Tensor {
  std::string name, dtype;  // dtype: "float32" or "int32" (bool is stored as int32)
  std::vector<int64_t> shape;
  std::vector<float> f;    // float32 values
  std::vector<int32_t> i;  // int32 values
  size_t size() const;     // number of elements
};

class Graph {
 public:
  // Reads `model_json` and the shards of its weights manifest (paths relative to the file's directory,
  // concatenated in manifest order). Throws Error naming the file on a missing or malformed file, a missing
  // shard, or shards whose total size differs from what the manifest describes.
  static Graph load(const std::string& model_json);

  const std::vector<Node>& nodes() const { return nodes_; }
  const Node* find_node(const std::string& name) const;
  bool has_weight(const std::string& name) const { return weights_.count(name) > 0; }
  // Throws Error when the weight is absent or its shape differs from `shape` (when given).
  const Tensor& weight(const std::string& name, const std::vector<int64_t>& shape = {}) const;
  float scalar_float(const std::string& name) const;  // a one-element float32 weight
  int64_t scalar_int(const std::string& name) const;  // a one-element int32 weight

  const std::map<std::string, Tensor>& weights() const { return weights_; }
  uint64_t weights_hash() const { return weights_hash_; }  // FNV-1a of the raw shard bytes
  size_t weights_bytes() const { return weights_bytes_; }
  // One line per non-constant node: op, name, inputs. For inspecting a model.
  std::string describe() const;

 private:
  std::string source_;
  std::vector<Node> nodes_;
  std::map<std::string, size_t> node_index_;
  std::map<std::string, Tensor> weights_;
  uint64_t weights_hash_ = 0;
  size_t weights_bytes_ = 0;
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace xdrec::tfjs
