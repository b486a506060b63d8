// Text vectors for the pipeline, and the text configuration saved beside a model.
#include <cstring>
#include <filesystem>

#include "xdrec/pipeline.h"

namespace fs = std::filesystem;

namespace xdrec {

std::unique_ptr<TextEncoder> make_text_encoder(const std::string& spec, std::string* note) {
  check(!spec.empty(), "--encoder: empty encoder spec");
  if (spec != "auto") return create_encoder(spec);
  try {
    return create_encoder("use-lite");
  } catch (const Error& e) {
    if (note) *note = std::string("encoder auto: use-lite unavailable (") + e.what() + "); using tfidf";
    return create_encoder("tfidf");
  }
}

bool TextVectorSource::available(const std::string& spec, std::string* why) {
  if (spec.empty() || spec == "none") return true;
  if (pretrained_.count(spec)) return true;
  if (auto it = unavailable_.find(spec); it != unavailable_.end()) {
    if (why) *why = it->second;
    return false;
  }
  try {
    auto enc = make_text_encoder(spec);
    if (enc->needs_fit()) {
      const std::vector<std::string> corpus{"a small test corpus", "of two texts"};
      enc->fit(corpus, 1);
    }
    const std::vector<std::string> one{"a test sentence"};
    (void)enc->encode(one, 1);
    if (!enc->needs_fit()) pretrained_[spec] = std::move(enc);
    return true;
  } catch (const std::exception& e) {
    unavailable_[spec] = e.what();
    if (why) *why = e.what();
    return false;
  }
}

std::string TextVectorSource::key(const Dataset& ds, const Split* split, const std::string& spec) const {
  // Vectors depend on the split only through the (user, item) pairs it holds out, whose tags are dropped.
  uint64_t h = ds.fingerprint();
  if (split != nullptr && !ds.tags.empty())
    for (const auto* part : {&split->validation, &split->test})
      for (const auto& it : *part) {
        const uint64_t pair[2] = {it.user, it.item};
        h = fnv1a64(pair, sizeof pair, h);
      }
  return spec + "|" + hex64(h) + "|" + opt_.item_template;
}

bool TextVectorSource::has(const Dataset& ds, const Split* split, const std::string& spec) const {
  return cache_.count(key(ds, split, spec)) > 0;
}

const TextVectors& TextVectorSource::get(const Dataset& ds, const Split* split, const std::string& spec) {
  check(!spec.empty() && spec != "none", "TextVectorSource: no encoder named");
  const bool by_split = split != nullptr && !ds.tags.empty();
  const std::string key = this->key(ds, split, spec);
  if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  std::unique_ptr<TextEncoder> fitted;
  TextEncoder* enc = nullptr;
  if (auto it = pretrained_.find(spec); it != pretrained_.end()) {
    enc = it->second.get();
  } else {
    fitted = make_text_encoder(spec);
    enc = fitted.get();
    if (!enc->needs_fit()) {
      pretrained_[spec] = std::move(fitted);
      enc = pretrained_[spec].get();
    }
  }
  EmbedOptions eo;
  eo.item_template = opt_.item_template;
  eo.cache_dir = opt_.cache_dir;
  eo.threads = resolve_threads(opt_.threads);
  eo.batch = 256;
  eo.progress = opt_.progress;
  return cache_.emplace(key, embed_dataset(ds, *enc, eo, by_split ? split : nullptr)).first->second;
}

void attach_text(const TextVectors& v, FitContext& ctx) {
  ctx.item_text = &v.items;
  ctx.user_text = v.users_with_text > 0 ? &v.users : nullptr;
  ctx.text_encoder = v.encoder_spec;
}

void write_text_config(const std::string& model_dir, const TextVectors& t, const std::string& item_template,
                       bool split_tags, const std::string& split_dir) {
  nlohmann::json j = {{"format", "xdrec-text-config"},
                      {"version", 1},
                      {"encoder", t.encoder_spec},
                      {"fingerprint", t.fingerprint},
                      {"dim", t.items.cols},
                      {"item_template", item_template},
                      {"split_tags", split_tags},
                      {"split", split_tags ? fs::absolute(split_dir).lexically_normal().string() : ""}};
  write_file_atomic((fs::path(model_dir) / kTextConfigFile).string(), j.dump(2) + "\n");
}

void remove_text_config(const std::string& model_dir) {
  std::error_code ec;
  fs::remove(fs::path(model_dir) / kTextConfigFile, ec);
}

std::optional<TextConfig> read_text_config(const std::string& model_dir) {
  const std::string path = (fs::path(model_dir) / kTextConfigFile).string();
  if (!fs::exists(path)) return std::nullopt;
  TextConfig cfg;
  try {
    const nlohmann::json j = nlohmann::json::parse(read_file(path));
    check(j.is_object() && j.value("format", "") == "xdrec-text-config", path + ": not an xdrec text config");
    cfg.encoder = j.at("encoder").get<std::string>();
    cfg.fingerprint = j.at("fingerprint").get<std::string>();
    cfg.dim = j.at("dim").get<size_t>();
    cfg.item_template = j.at("item_template").get<std::string>();
    cfg.split_tags = j.value("split_tags", false);
    cfg.split_dir = j.value("split", "");
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": malformed text config: " + e.what());
  }
  return cfg;
}

std::unique_ptr<TextEncoder> encoder_for_model(const Recommender& model, const std::string& model_dir,
                                               const Dataset& ds, const Split* split, int threads) {
  check(model.uses_text(), "model '" + model.name() +
                               "' does not use text, so it cannot serve a profile text or a new item's text "
                               "(train a text model with --encoder; `xdrec models` lists them)");
  const std::string spec = model.text_encoder();
  check(!spec.empty(), "model '" + model.spec() + "' in '" + model_dir +
                           "' was trained without text vectors; retrain it with --encoder SPEC");
  const std::optional<TextConfig> cfg = read_text_config(model_dir);
  check(!cfg || cfg->encoder == spec, "'" + model_dir + "/" + kTextConfigFile + "' names the encoder '" +
                                          (cfg ? cfg->encoder : "") + "' but the model was fitted with '" +
                                          spec + "'");
  std::unique_ptr<TextEncoder> enc;
  try {
    enc = create_encoder(spec);
  } catch (const Error& e) {
    throw Error("cannot re-create the text encoder of model '" + model.name() + "' (" + spec +
                "): " + e.what());
  }
  if (enc->needs_fit()) {
    check(cfg.has_value(), "model directory '" + model_dir + "' has no " + kTextConfigFile +
                               ", which encoder " + enc->name() +
                               " needs to be refitted; retrain the model with `xdrec train`");
    check(!cfg->split_tags || ds.tags.empty() || split != nullptr,
          "model '" + model_dir + "' was trained on the item texts of a split; give that split");
    // The same corpus as embed_dataset: the non-empty item texts.
    std::vector<std::string> corpus;
    for (auto& t : dataset_item_texts(ds, cfg->item_template, cfg->split_tags ? split : nullptr, true))
      if (!t.empty()) corpus.push_back(std::move(t));
    enc->fit(corpus, resolve_threads(threads));
  }
  if (cfg)
    check(enc->fingerprint() == cfg->fingerprint,
          "the text encoder " + spec + " re-created for model '" + model.name() +
              "' differs from the one it was trained with (fingerprint " + enc->fingerprint() +
              ", recorded " + cfg->fingerprint + "): use the dataset (and split) the model was trained on");
  return enc;
}

std::vector<float> encode_one(const TextEncoder& enc, const std::string& text, int threads) {
  const std::string one[1] = {text};
  const Matrix m = enc.encode(one, resolve_threads(threads));
  check(m.rows == 1, enc.name() + ": encode gave " + std::to_string(m.rows) + " rows for one text");
  return std::vector<float>(m.data.begin(), m.data.end());
}

}  // namespace xdrec
