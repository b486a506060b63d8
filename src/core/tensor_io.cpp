#include "xdrec/tensor_io.h"

#include <cstring>
#include <fstream>

namespace xdrec {

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32:
    case DType::I32:
    case DType::U32:
      return 4;
    case DType::I64:
    case DType::U64:
      return 8;
    case DType::U8:
    case DType::I8:
      return 1;
    case DType::F16:
      return 2;
  }
  return 1;
}

namespace {
const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32:
      return "F32";
    case DType::I32:
      return "I32";
    case DType::U32:
      return "U32";
    case DType::I64:
      return "I64";
    case DType::U64:
      return "U64";
    case DType::U8:
      return "U8";
    case DType::I8:
      return "I8";
    case DType::F16:
      return "F16";
  }
  return "?";
}
DType dtype_from(const std::string& s, const std::string& path) {
  if (s == "F32") return DType::F32;
  if (s == "I32") return DType::I32;
  if (s == "U32") return DType::U32;
  if (s == "I64") return DType::I64;
  if (s == "U64") return DType::U64;
  if (s == "U8") return DType::U8;
  if (s == "I8") return DType::I8;
  if (s == "F16") return DType::F16;
  throw Error(path + ": unsupported tensor dtype '" + s + "'");
}
template <class T>
Tensor make(DType d, std::vector<int64_t> shape, const T* data) {
  Tensor t;
  t.dtype = d;
  t.shape = std::move(shape);
  size_t n = t.numel();
  t.bytes.resize(n * sizeof(T));
  if (n) std::memcpy(t.bytes.data(), data, n * sizeof(T));
  return t;
}
template <class T>
std::vector<T> copy_out(const Tensor& t, DType want, const std::string& name) {
  check(t.dtype == want, "tensor '" + name + "': expected dtype " + dtype_name(want) + ", got " +
                             dtype_name(t.dtype));
  check(t.bytes.size() == t.numel() * sizeof(T), "tensor '" + name + "': byte size does not match its shape");
  std::vector<T> v(t.numel());
  if (!v.empty()) std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}
}  // namespace

size_t Tensor::numel() const {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  return n;
}
Tensor Tensor::from_f32(std::vector<int64_t> shape, const float* data) { return make(DType::F32, shape, data); }
Tensor Tensor::from_u32(std::vector<int64_t> shape, const uint32_t* data) {
  return make(DType::U32, shape, data);
}
Tensor Tensor::from_u64(std::vector<int64_t> shape, const uint64_t* data) {
  return make(DType::U64, shape, data);
}
Tensor Tensor::from_matrix(const Matrix& m) {
  return from_f32({int64_t(m.rows), int64_t(m.cols)}, m.data.data());
}
Tensor Tensor::from_csr_part(const std::vector<uint64_t>& v) { return from_u64({int64_t(v.size())}, v.data()); }
std::vector<float> Tensor::to_f32(const std::string& name) const { return copy_out<float>(*this, DType::F32, name); }
std::vector<uint32_t> Tensor::to_u32(const std::string& name) const {
  return copy_out<uint32_t>(*this, DType::U32, name);
}
std::vector<uint64_t> Tensor::to_u64(const std::string& name) const {
  return copy_out<uint64_t>(*this, DType::U64, name);
}
Matrix Tensor::to_matrix(const std::string& name) const {
  check(shape.size() == 2, "tensor '" + name + "': expected 2 dimensions, got " + std::to_string(shape.size()));
  Matrix m;
  m.rows = shape[0];
  m.cols = shape[1];
  m.data = to_f32(name);
  return m;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (auto& [name, t] : tensors) {
    check(t.bytes.size() == t.numel() * dtype_size(t.dtype), "tensor '" + name + "': byte size mismatch");
    header[name] = {{"dtype", dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  while (h.size() % 8) h.push_back(' ');
  write_file_atomic(path, [&](std::FILE* f) {
    uint64_t n = h.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(h.data(), 1, h.size(), f) == h.size();
    for (auto& [name, t] : tensors)
      ok = ok && (t.bytes.empty() || std::fwrite(t.bytes.data(), 1, t.bytes.size(), f) == t.bytes.size());
    if (!ok) throw Error("write failed for '" + path + "'");
  });
}

TensorMap load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error("cannot open tensor file '" + path + "'");
  const uint64_t size = static_cast<uint64_t>(f.tellg());
  f.seekg(0);
  check(size >= 8, path + ": truncated safetensors file (" + std::to_string(size) + " bytes)");
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  check(n <= size - 8, path + ": header length " + std::to_string(n) + " exceeds the file size (truncated?)");
  std::string h(n, '\0');
  f.read(h.data(), static_cast<std::streamsize>(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(h);
  } catch (const std::exception& e) {
    throw Error(path + ": malformed safetensors header: " + e.what());
  }
  check(header.is_object(), path + ": safetensors header is not a JSON object");
  const uint64_t data_start = 8 + n, data_size = size - data_start;
  TensorMap out;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (metadata) {
        check(info.is_object(), path + ": __metadata__ is not a JSON object");
        for (auto& [k, v] : info.items()) {
          check(v.is_string(), path + ": __metadata__ value '" + k + "' is not a string");
          (*metadata)[k] = v.get<std::string>();
        }
      }
      continue;
    }
    try {
      Tensor t;
      t.dtype = dtype_from(info.at("dtype").get<std::string>(), path);
      t.shape = info.at("shape").get<std::vector<int64_t>>();
      auto offs = info.at("data_offsets").get<std::vector<uint64_t>>();
      check(offs.size() == 2 && offs[0] <= offs[1], path + ": tensor '" + name + "' has bad data_offsets");
      check(offs[1] <= data_size, path + ": tensor '" + name + "' extends past the end of the file (truncated?)");
      check(offs[1] - offs[0] == t.numel() * dtype_size(t.dtype),
            path + ": tensor '" + name + "' byte range does not match its shape");
      t.bytes.resize(offs[1] - offs[0]);
      f.seekg(static_cast<std::streamoff>(data_start + offs[0]));
      if (!t.bytes.empty()) f.read(reinterpret_cast<char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
      check(bool(f), path + ": read failed for tensor '" + name + "'");
      out.emplace(name, std::move(t));
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": tensor '" + name + "': " + e.what());
    }
  }
  return out;
}

const Tensor& get_tensor(const TensorMap& t, const std::string& name) {
  auto it = t.find(name);
  check(it != t.end(), "model file has no tensor '" + name + "'");
  return it->second;
}

void put_csr(TensorMap& t, const std::string& prefix, const Csr& m) {
  uint32_t shape[2] = {m.n_rows, m.n_cols};
  t[prefix + ".shape"] = Tensor::from_u32({2}, shape);
  t[prefix + ".indptr"] = Tensor::from_csr_part(m.indptr);
  t[prefix + ".indices"] = Tensor::from_u32({int64_t(m.indices.size())}, m.indices.data());
  t[prefix + ".values"] = Tensor::from_f32({int64_t(m.values.size())}, m.values.data());
}

Csr get_csr(const TensorMap& t, const std::string& prefix) {
  Csr m;
  auto shape = get_tensor(t, prefix + ".shape").to_u32(prefix + ".shape");
  check(shape.size() == 2, "tensor '" + prefix + ".shape' must hold 2 values");
  m.n_rows = shape[0];
  m.n_cols = shape[1];
  m.indptr = get_tensor(t, prefix + ".indptr").to_u64(prefix + ".indptr");
  m.indices = get_tensor(t, prefix + ".indices").to_u32(prefix + ".indices");
  m.values = get_tensor(t, prefix + ".values").to_f32(prefix + ".values");
  check(m.indptr.size() == size_t(m.n_rows) + 1 && m.indptr.back() == m.indices.size() &&
            m.values.size() == m.indices.size(),
        "sparse matrix '" + prefix + "' in the model file is inconsistent");
  for (uint32_t c : m.indices) check(c < m.n_cols, "sparse matrix '" + prefix + "' has a column out of range");
  return m;
}

}  // namespace xdrec
