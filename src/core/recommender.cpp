// Model registry and model files (save/load).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "xdrec/recommender.h"

namespace xdrec {

namespace {
std::vector<ModelInfo>& registry() {
  static std::vector<ModelInfo> r;
  return r;
}
constexpr int kModelFormatVersion = 1;
}  // namespace

bool register_model(ModelInfo info) {
  auto& r = registry();
  auto it = std::lower_bound(r.begin(), r.end(), info.name,
                             [](const ModelInfo& m, const std::string& n) { return m.name < n; });
  r.insert(it, std::move(info));
  return true;
}

const std::vector<ModelInfo>& registered_models() { return registry(); }

float Recommender::predict(uint32_t user, uint32_t item) const {
  check(item < n_items(), name() + " predict: item index " + std::to_string(item) + " is out of range");
  Matrix m;
  const uint32_t u[1] = {user};
  score(u, m, 1);
  return m(0, item);
}

uint32_t Recommender::add_item(std::span<const float> text_vector, uint16_t domain) {
  (void)text_vector;
  (void)domain;
  throw Error(name() + " cannot add items without retraining (it does not use text)");
}

uint32_t Recommender::fold_in_profile(uint32_t user, std::span<const float> profile_vector,
                                      std::span<const uint32_t> items, std::span<const float> weights) {
  if (!profile_vector.empty()) throw Error(name() + " does not use profile text");
  return fold_in(user, items, weights);
}

const ModelInfo& model_info(const std::string& name) {
  for (auto& m : registry())
    if (m.name == name) return m;
  std::string known;
  for (auto& m : registry()) known += (known.empty() ? "" : ", ") + m.name;
  throw Error("unknown model '" + name + "' (known: " + known + ")");
}

std::unique_ptr<Recommender> create_model(const std::string& spec_text) {
  Spec spec = Spec::parse(spec_text);
  return model_info(spec.name).create(spec);
}

ModelCost estimate_model_cost(const std::string& spec_text, const DataShape& shape) {
  const Spec spec = Spec::parse(spec_text);
  const ModelInfo& info = model_info(spec.name);
  check(bool(info.estimate), "model '" + spec.name + "' has no cost estimate");
  return info.estimate(spec, shape);
}

void save_model(const Recommender& model, const std::string& dir, uint64_t data_fingerprint, Store store,
                double prune) {
  check(prune >= 0.0 && prune < 1.0, "prune: the fraction must be in [0, 1), not " + std::to_string(prune));
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec && fs::is_directory(dir), "cannot create model directory '" + dir + "'");
  TensorMap tensors;
  nlohmann::json extra = nlohmann::json::object();
  model.save(tensors, extra);
  const std::vector<std::string> compressed =
      store == Store::kFp32 ? std::vector<std::string>{} : model.compressible_tensors();
  // Pruning first (on the floats), then the storage, then the sparse form of what was pruned.
  nlohmann::json sparsity = nlohmann::json::object();
  if (prune > 0.0)
    for (const auto& [name, tensor] : tensors)
      if (tensor.dtype == DType::F32 && tensor.shape.size() == 2 && tensor.shape[0] >= 2 &&
          tensor.shape[1] >= 2 && model.prunable_tensor(name))
        sparsity[name] = 0.0;
  for (auto& [name, s] : sparsity.items()) s = prune_tensor(tensors, name, prune);
  check(prune == 0.0 || !sparsity.empty(),
        "prune: model '" + model.name() + "' has no prunable weight matrices");
  for (const std::string& name : compressed) compress_tensor(tensors, name, store);
  for (auto& [name, s] : sparsity.items()) sparsify_tensor(tensors, name);
  const std::string tensor_path = (fs::path(dir) / "model.safetensors").string();
  save_safetensors(tensor_path, tensors, {{"format", "xdrec"}, {"spec", model.spec()}});
  std::string bytes = read_file(tensor_path);
  nlohmann::json manifest = {{"format", "xdrec-model"},
                             {"version", kModelFormatVersion},
                             {"model", model.name()},
                             {"spec", model.spec()},
                             {"n_users", model.n_users()},
                             {"n_items", model.n_items()},
                             {"data_fingerprint", hex64(data_fingerprint)},
                             {"tensors", "model.safetensors"},
                             {"tensors_fnv1a64", hex64(fnv1a64(bytes.data(), bytes.size()))},
                             {"store", store_name(store)},
                             {"compressed_tensors", compressed},
                             {"prune", prune},
                             {"sparsity", sparsity},
                             {"extra", extra}};
  write_file_atomic((fs::path(dir) / "manifest.json").string(), manifest.dump(2) + "\n");
}

std::unique_ptr<Recommender> load_model(const std::string& dir, uint64_t* data_fingerprint) {
  namespace fs = std::filesystem;
  check(fs::is_directory(dir), "model directory '" + dir + "' does not exist (train one with `xdrec train`)");
  const std::string manifest_path = (fs::path(dir) / "manifest.json").string();
  check(fs::exists(manifest_path), "'" + dir + "' is not an xdrec model directory: manifest.json is missing");
  nlohmann::json manifest;
  std::string spec, tensor_file, checksum;
  uint64_t fingerprint = 0, want_users = 0, want_items = 0;
  nlohmann::json extra;
  try {
    manifest = nlohmann::json::parse(read_file(manifest_path));
    check(manifest.is_object() && manifest.value("format", "") == "xdrec-model",
          manifest_path + ": not an xdrec model manifest");
    const int version = manifest.value("version", 0);
    check(version == kModelFormatVersion, manifest_path + ": model format version " +
                                              std::to_string(version) + " is not supported (expected " +
                                              std::to_string(kModelFormatVersion) + ")");
    spec = manifest.at("spec").get<std::string>();
    tensor_file = manifest.value("tensors", "model.safetensors");
    checksum = manifest.value("tensors_fnv1a64", "");
    want_users = manifest.at("n_users").get<uint64_t>();
    want_items = manifest.at("n_items").get<uint64_t>();
    extra = manifest.value("extra", nlohmann::json::object());
    const std::string fp = manifest.value("data_fingerprint", "0");
    char* end = nullptr;
    fingerprint = std::strtoull(fp.c_str(), &end, 16);
    check(!fp.empty() && end == fp.c_str() + fp.size(),
          manifest_path + ": malformed data_fingerprint '" + fp + "'");
  } catch (const nlohmann::json::exception& e) {
    throw Error(manifest_path + ": malformed JSON: " + e.what());
  }
  const std::string tensor_path = (fs::path(dir) / tensor_file).string();
  check(fs::exists(tensor_path), "model directory '" + dir + "': tensor file '" + tensor_path + "' is missing");
  std::string bytes = read_file(tensor_path);
  check(hex64(fnv1a64(bytes.data(), bytes.size())) == checksum,
        tensor_path + ": checksum mismatch (the file is corrupt or was modified)");
  auto model = create_model(spec);
  TensorMap tensors = load_safetensors(tensor_path);
  densify_tensors(tensors);     // pruned matrices stored sparsely (manifest "sparsity")
  decompress_tensors(tensors);  // int8 / fp16 matrices (manifest "store") back to floats
  model->load(tensors, extra);
  check(model->n_users() == want_users && model->n_items() == want_items,
        tensor_path + ": the tensors hold " + std::to_string(model->n_users()) + " users and " +
            std::to_string(model->n_items()) + " items but the manifest says " + std::to_string(want_users) +
            " and " + std::to_string(want_items));
  if (data_fingerprint) *data_fingerprint = fingerprint;
  return model;
}

}  // namespace xdrec
