// Text side information for the commands that fit or serve text models: the encoder chosen by --encoder,
// item and user text vectors for FitContext, and the small text configuration saved next to a model so that
// `xdrec recommend` can re-create the same encoder (and refit a corpus encoder such as tfidf identically).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "xdrec/embed.h"
#include "xdrec/encoder.h"
#include "xdrec/recommender.h"
#include "xdrec/split.h"

namespace xdrec::cli {

// "auto": use-lite when it can be created (its model is installed), otherwise tfidf. Any other spec is
// created as given.
std::unique_ptr<TextEncoder> make_encoder(const std::string& spec, bool quiet);

// One text per item rendered with the template. Categories include the user tags that `split` does not
// hold out (item_text_with_tags); a null split keeps every tag (as `xdrec embed` does).
std::vector<std::string> item_texts(const Dataset& ds, const std::string& tmpl, const Split* split);

// Text vectors of a dataset for fitting: rows follow the dataset's item / user order; an item or user whose
// text is empty gets a row of zeros ("no text").
struct TextSide {
  Matrix items, users;
  bool has_user_text = false;  // at least one user has a profile text
  std::string encoder_spec, fingerprint, item_template;
  bool split_tags = false;  // item texts were built from a split's fair tags (the dataset has tags)
  EmbedStats stats;
  // Points ctx.item_text / user_text / text_encoder at these vectors.
  void attach(FitContext& ctx) const;
};

// Fits `enc` on the item texts when it needs fitting, then encodes the item and user texts through the
// embedding cache.
TextSide compute_text_side(const Dataset& ds, const Split* split, TextEncoder& enc, const TextArgs& a,
                           const Common& c);

// text.json in a model directory: which encoder made the model's text vectors and how the item texts were
// rendered, so that serving can rebuild the encoder.
struct TextConfig {
  std::string encoder, fingerprint, item_template, split_dir;
  size_t dim = 0;
  bool split_tags = false;
};
inline constexpr const char* kTextConfigFile = "text.json";
void write_text_config(const std::string& model_dir, const TextSide& t, const std::string& split_dir);
void remove_text_config(const std::string& model_dir);
std::optional<TextConfig> read_text_config(const std::string& model_dir);

// The encoder a fitted text model expects for add_item / fold_in_profile: re-created from
// model.text_encoder(); a corpus encoder is refitted on the dataset's item texts rendered as at training time
// and must reproduce the recorded fingerprint. `split_dir` overrides the split recorded in text.json.
// Throws Error naming the model when it does not use text or was fitted without text vectors.
std::unique_ptr<TextEncoder> encoder_for_model(const Recommender& model, const std::string& model_dir,
                                               const Dataset& ds, const std::string& split_dir,
                                               const Common& c);

// One text -> one vector (size enc.dim()).
std::vector<float> encode_one(const TextEncoder& enc, const std::string& text, int threads);

}  // namespace xdrec::cli
