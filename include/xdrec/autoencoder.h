// Text autoencoder: compresses (and, with input noise, de-noises) text vectors from any encoder into a short
// code shared by all domains. Trained to minimise L = 1/N sum ||x - dec(enc(x))||^2.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "xdrec/common.h"
#include "xdrec/tensor_io.h"

namespace xdrec {

struct AutoencoderOptions {
  int code_dim = 64;
  int hidden = 256;            // one hidden layer of this width on each side; 0: linear encoder/decoder
  double noise = 0.0;          // denoising: each input coordinate dropped with this probability (0: plain AE)
  int epochs = 30;
  int batch = 128;
  double lr = 1e-3;            // Adam
  double weight_decay = 0.0;
  uint64_t seed = 42;
  int threads = 1;             // results do not depend on it
};

class TextAutoencoder {
 public:
  // Rows of x are samples; rows of zeros (no text) are skipped. Deterministic given options.seed.
  void fit(const Matrix& x, const AutoencoderOptions& opt);
  bool fitted() const;
  size_t input_dim() const;
  size_t code_dim() const;
  Matrix encode(const Matrix& x, int threads = 1) const;  // x.rows x code_dim
  void encode_row(const float* x, float* code) const;      // input_dim -> code_dim
  Matrix reconstruct(const Matrix& x, int threads = 1) const;
  // Mean over rows of ||x - dec(enc(x))||^2 (rows of zeros skipped).
  double reconstruction_error(const Matrix& x, int threads = 1) const;
  // Tensors under "<prefix>..." names.
  void save(TensorMap& tensors, const std::string& prefix) const;
  void load(const TensorMap& tensors, const std::string& prefix);  // Error when missing or inconsistent

 private:
  struct State;
  std::shared_ptr<State> s_;
};

}  // namespace xdrec
