// TextEncoder: turns a batch of UTF-8 strings into fixed-length float vectors; a registry of encoders chosen
// by spec strings ("use-lite", "bert:/path/to/model", "tfidf:dim=256", "glove", "http:URL").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/params.h"

namespace xdrec {

class TextEncoder {
 public:
  virtual ~TextEncoder() = default;

  virtual std::string name() const = 0;  // registry name, e.g. "use-lite"
  virtual std::string spec() const = 0;  // canonical spec with every setting
  virtual size_t dim() const = 0;        // output dimension (after fit for fitted encoders)
  // Hash of the weights and settings: two encoders with the same fingerprint give the same vectors.
  // Used to key embedding caches and recorded in model manifests.
  virtual std::string fingerprint() const = 0;

  // Encoders learned from the corpus (tfidf) need fit() before encode(); pretrained ones do not.
  virtual bool needs_fit() const { return false; }
  virtual void fit(std::span<const std::string> corpus, int threads) {
    (void)corpus;
    (void)threads;
  }

  // One row per text, row-major texts.size() x dim(). Empty and very long texts give a valid vector.
  virtual Matrix encode(std::span<const std::string> texts, int threads) const = 0;

  // Token ids of one text as the encoder's tokenizer produces them (before truncation where the reference
  // tokenizer does so). Throws Error for encoders without a tokenizer.
  virtual std::vector<int32_t> token_ids(const std::string& text) const {
    (void)text;
    throw Error(name() + ": this encoder has no tokenizer");
  }
};

struct EncoderInfo {
  std::string name;
  std::string summary;
  // Creates an encoder from a spec; the text after "name:" that is not key=value (e.g. a directory or URL)
  // arrives in Spec::values[""] (see create_encoder).
  std::function<std::unique_ptr<TextEncoder>(const Spec&)> create;
};

bool register_encoder(EncoderInfo info);
const std::vector<EncoderInfo>& registered_encoders();

// "use-lite", "tfidf:dim=256", "bert:/models/all-MiniLM-L6-v2", "bert:dir=/m,max_length=128",
// "http:http://127.0.0.1:8080/v1/embeddings,model=x". For bert and http the first argument may be given
// without a key: it is stored under the key "" (path or URL).
std::unique_ptr<TextEncoder> create_encoder(const std::string& spec);

// Where pretrained models are unpacked: $XDREC_MODEL_DIR if set, else $XDG_CACHE_HOME/xdrec/models, else
// ~/.cache/xdrec/models.
std::string model_cache_dir();

#define XDREC_REGISTER_ENCODER(ID, NAME, SUMMARY, CLASS)                                        \
  static const bool xdrec_registered_encoder_##ID = ::xdrec::register_encoder(::xdrec::EncoderInfo{ \
      NAME, SUMMARY, [](const ::xdrec::Spec& s) -> std::unique_ptr<::xdrec::TextEncoder> {        \
        return std::make_unique<CLASS>(s);                                                        \
      }})

}  // namespace xdrec
