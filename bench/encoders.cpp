// Throughput and memory of the text encoders on a MiniLM-L6-shaped BERT (hidden 384, 6 layers, 12 heads,
// intermediate 1536, vocabulary 30522, random weights written to a temporary model folder), 64-token texts,
// batches of 1 and 32, 1 and 2 threads, float32 and int8 weights; and USE-Lite when it is installed.
// PyTorch on the same machine runs the same weights and token ids (bench/encoders_torch.py) when --torch is
// given: the BERT, and USE-Lite re-implemented in PyTorch with the TensorFlow.js model's weights, fed the ids
// of xdrec's USE-Lite tokenizer (written by a child process to the model folder's use_lite_ids.json); with
// several threads it runs with the default OpenMP wait policy and with OMP_WAIT_POLICY=PASSIVE, and the
// faster counts. Throughputs are the best of several rounds (the machine may be shared), medians are given.
//
//   bench_encoders OUT.json [--torch SCRIPT] [--python PYTHON] [--seconds S] [--threads 1,2] [--batches 1,32]
//                  [--model-dir DIR]   (write the model folder there and keep it; default: a temporary
//                  folder)
//
// Each configuration runs in a fresh process (this program re-executed with --child), so that its peak
// resident memory (VmHWM) is its own: loading the model plus encoding. Writes
// {"<encoder>/<batch>/<threads>": {"xdrec_sentences_per_second", "pytorch_sentences_per_second",
// "peak_rss_mb", ...}} to OUT.json and a table to stdout.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/encoder.h"
#include "xdrec/tensor_io.h"

using namespace xdrec;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr size_t kHidden = 384, kLayers = 6, kHeads = 12, kInter = 1536, kVocab = 30522, kPositions = 512;
constexpr size_t kWords = 62;  // + [CLS] + [SEP] = 64 tokens
constexpr size_t kTexts = 256;
constexpr size_t kSpecials = 5;                  // [PAD] [UNK] [CLS] [SEP] [MASK]
constexpr size_t kUseLiteMaxTokens = 128;        // tokens USE-Lite embeds per text (its default)
constexpr double kUseLiteCheckTolerance = 1e-4;  // max abs difference of the unit vectors

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

// Vocabulary word i: "w" followed by i in base 26 (letters), so that every word is one WordPiece token.
std::string word(size_t i) {
  std::string s = "w";
  do {
    s.push_back(char('a' + i % 26));
    i /= 26;
  } while (i);
  return s;
}

// Writes the model folder and the benchmark texts (texts.txt, ids.json). Weights ~ N(0, 0.02) as in BERT's
// initialisation; layer norms start at gamma = 1, beta = 0.
void make_model(const std::string& dir) {
  fs::create_directories(dir + "/1_Pooling");
  json config = {{"architectures", {"BertModel"}},
                 {"model_type", "bert"},
                 {"hidden_size", kHidden},
                 {"num_hidden_layers", kLayers},
                 {"num_attention_heads", kHeads},
                 {"intermediate_size", kInter},
                 {"hidden_act", "gelu"},
                 {"layer_norm_eps", 1e-12},
                 {"max_position_embeddings", kPositions},
                 {"type_vocab_size", 2},
                 {"vocab_size", kVocab},
                 {"pad_token_id", 0}};
  write_file_atomic(dir + "/config.json", config.dump(2));
  write_file_atomic(
      dir + "/tokenizer_config.json",
      R"({"do_lower_case": true, "model_max_length": 512, "tokenizer_class": "BertTokenizer"})");
  write_file_atomic(dir + "/sentence_bert_config.json", R"({"max_seq_length": 256, "do_lower_case": false})");
  write_file_atomic(dir + "/modules.json",
                    R"([{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
{"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}])");
  write_file_atomic(dir + "/1_Pooling/config.json",
                    R"({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true})");
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  for (size_t i = kSpecials; i < kVocab; ++i) vocab += word(i - kSpecials) + "\n";
  write_file_atomic(dir + "/vocab.txt", vocab);

  Rng rng(2024);
  TensorMap t;
  auto normal = [&](const std::string& name, std::vector<int64_t> shape, float sd) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    std::vector<float> v(n);
    for (auto& x : v) x = rng.normal() * sd;
    t[name] = Tensor::from_f32(shape, v.data());
  };
  auto constant = [&](const std::string& name, size_t n, float value) {
    std::vector<float> v(n, value);
    t[name] = Tensor::from_f32({int64_t(n)}, v.data());
  };
  const int64_t H = kHidden, I = kInter;
  normal("embeddings.word_embeddings.weight", {int64_t(kVocab), H}, 0.02f);
  normal("embeddings.position_embeddings.weight", {int64_t(kPositions), H}, 0.02f);
  normal("embeddings.token_type_embeddings.weight", {2, H}, 0.02f);
  constant("embeddings.LayerNorm.weight", kHidden, 1.0f);
  constant("embeddings.LayerNorm.bias", kHidden, 0.0f);
  for (size_t l = 0; l < kLayers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* m : {"query", "key", "value"}) {
      normal(p + "attention.self." + m + ".weight", {H, H}, 0.02f);
      normal(p + "attention.self." + m + ".bias", {H}, 0.02f);
    }
    normal(p + "attention.output.dense.weight", {H, H}, 0.02f);
    normal(p + "attention.output.dense.bias", {H}, 0.02f);
    constant(p + "attention.output.LayerNorm.weight", kHidden, 1.0f);
    constant(p + "attention.output.LayerNorm.bias", kHidden, 0.0f);
    normal(p + "intermediate.dense.weight", {I, H}, 0.02f);
    normal(p + "intermediate.dense.bias", {I}, 0.02f);
    normal(p + "output.dense.weight", {H, I}, 0.02f);
    normal(p + "output.dense.bias", {H}, 0.02f);
    constant(p + "output.LayerNorm.weight", kHidden, 1.0f);
    constant(p + "output.LayerNorm.bias", kHidden, 0.0f);
  }
  save_safetensors(dir + "/model.safetensors", t, {{"format", "pt"}});

  // Texts of 62 random vocabulary words: 64 tokens each with [CLS] and [SEP].
  std::string texts;
  json ids = json::array();
  for (size_t i = 0; i < kTexts; ++i) {
    std::vector<int> row{2};
    for (size_t w = 0; w < kWords; ++w) {
      const size_t id = kSpecials + rng.below(kVocab - kSpecials);
      texts += (w ? " " : "") + word(id - kSpecials);
      row.push_back(int(id));
    }
    row.push_back(3);
    texts += "\n";
    ids.push_back(row);
  }
  write_file_atomic(dir + "/texts.txt", texts);
  write_file_atomic(dir + "/ids.json", ids.dump());
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) out.push_back(line);
  return out;
}

// Token ids of all benchmark texts as USE-Lite embeds them (at most kUseLiteMaxTokens), written to OUT for
// the PyTorch side; prints {"tokens_per_text", "equal_lengths"} or {"error"}.
int run_ids_child(const std::string& dir, const std::string& out_file) {
  json r;
  try {
    auto enc = create_encoder("use-lite");
    json ids = json::array();
    size_t lo = SIZE_MAX, hi = 0;
    for (const auto& text : read_lines(dir + "/texts.txt")) {
      std::vector<int32_t> t = enc->token_ids(text);
      if (t.size() > kUseLiteMaxTokens) t.resize(kUseLiteMaxTokens);
      lo = std::min(lo, t.size());
      hi = std::max(hi, t.size());
      ids.push_back(t);
    }
    write_file_atomic(out_file, ids.dump());
    r["tokens_per_text"] = hi;
    r["equal_lengths"] = lo == hi;
  } catch (const std::exception& e) {
    r["error"] = e.what();
  }
  std::cout << r.dump() << std::endl;
  return 0;
}

// One configuration, in its own process: prints one JSON object on stdout.
int run_child(const std::string& spec, int batch, int threads, double seconds, const std::string& dir) {
  json r;
  try {
    Timer load;
    auto enc = create_encoder(spec);
    r["load_seconds"] = load.seconds();
    const auto texts = read_lines(dir + "/texts.txt");
    const bool bert = spec.rfind("bert", 0) == 0;
    const std::string ids_file = dir + (bert ? "/ids.json" : "/use_lite_ids.json");
    if (bert || (spec == "use-lite" && fs::exists(ids_file))) {  // the inputs are what PyTorch is fed
      const json ids = json::parse(read_file(ids_file));
      for (size_t i = 0; i < 4; ++i) {
        std::vector<int32_t> t = enc->token_ids(texts[i]);
        if (!bert && t.size() > kUseLiteMaxTokens) t.resize(kUseLiteMaxTokens);
        if (t != ids[i].get<std::vector<int32_t>>())
          throw Error("bench: token ids differ from " + ids_file + " for text " + std::to_string(i));
      }
      r["tokens_per_text"] = ids[0].size();
      // Vectors of the first texts, compared with PyTorch's by the parent.
      const Matrix v = enc->encode(std::vector<std::string>(texts.begin(), texts.begin() + 4), threads);
      r["check"] = json::array();
      for (size_t i = 0; i < v.rows; ++i)
        r["check"].push_back(std::vector<float>(v.row(i), v.row(i) + v.cols));
    }
    // Warm-up, then rounds of batches until `seconds` have passed. The machine may be shared: the best round
    // (the least disturbed) is the throughput reported, the median is reported too.
    enc->encode(std::vector<std::string>(texts.begin(), texts.begin() + batch), threads);
    const double round_seconds = std::max(0.25, seconds / 8);
    std::vector<double> rates;
    size_t pos = 0;
    Timer total;
    while (total.seconds() < seconds || rates.size() < 3) {
      size_t done = 0;
      Timer t;
      while (t.seconds() < round_seconds || done < size_t(batch)) {
        if (pos + size_t(batch) > texts.size()) pos = 0;
        const std::vector<std::string> b(texts.begin() + long(pos), texts.begin() + long(pos) + batch);
        enc->encode(b, threads);
        done += size_t(batch);
        pos += size_t(batch);
      }
      rates.push_back(double(done) / t.seconds());
    }
    std::sort(rates.begin(), rates.end());
    r["xdrec_sentences_per_second"] = rates.back();
    r["xdrec_sentences_per_second_median"] = rates[rates.size() / 2];
    r["rounds"] = rates.size();
    r["peak_rss_mb"] = peak_rss_mb();
  } catch (const std::exception& e) {
    r["error"] = e.what();
  }
  std::cout << r.dump() << std::endl;
  return 0;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

json run_command(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw Error("cannot run: " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = ::pclose(p);
  const size_t start = out.rfind("\n{");
  const std::string last = start == std::string::npos ? out : out.substr(start + 1);
  try {
    return json::parse(last);
  } catch (const std::exception&) {
    return json{{"error", "command failed (status " + std::to_string(rc) + "): " + cmd + "\n" + out}};
  }
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = a.size() == b.size() ? 0 : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return a.size() == b.size() ? std::sqrt(num / std::max(den, 1e-300)) : INFINITY;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 7 && std::string(argv[1]) == "--child")
      return run_child(argv[2], std::stoi(argv[3]), std::stoi(argv[4]), std::stod(argv[5]), argv[6]);
    if (argc >= 4 && std::string(argv[1]) == "--ids") return run_ids_child(argv[2], argv[3]);
    if (argc < 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help") {
      std::cerr << "usage: bench_encoders OUT.json [--torch SCRIPT] [--python PYTHON] [--seconds S] "
                   "[--threads 1,2] [--batches 1,32]\n";
      return 2;
    }
    const std::string out_path = argv[1];
    std::string torch_script, python = "python3", model_dir;
    double seconds = 3;
    std::vector<int> threads{1, 2}, batches{1, 32};
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw Error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--torch")
        torch_script = next();
      else if (a == "--python")
        python = next();
      else if (a == "--seconds")
        seconds = std::stod(next());
      else if (a == "--threads")
        threads = parse_list(next());
      else if (a == "--batches")
        batches = parse_list(next());
      else if (a == "--model-dir")
        model_dir = next();
      else
        throw Error("unknown option " + a);
    }
    const std::string dir =
        !model_dir.empty()
            ? model_dir
            : (fs::temp_directory_path() / ("xdrec_bench_minilm_" + std::to_string(::getpid()))).string();
    make_model(dir);
    const std::string self = fs::read_symlink("/proc/self/exe").string();

    json out = json::object();
    std::vector<std::string> notes;
    const auto loadavg = [] {
      std::string l = read_file("/proc/loadavg");
      return l.substr(0, l.find(' '));
    };
    const std::string load_before = loadavg();
    // PyTorch, one process per thread count (OpenBLAS and OpenMP pools sized by the environment). With
    // several threads PyTorch's idle OpenMP threads spin and compete with OpenBLAS's own threads; it runs
    // both with the default wait policy and with OMP_WAIT_POLICY=PASSIVE and keeps, per batch size, the
    // faster.
    // One PyTorch run per thread count of the model `model_dir` (--arch, --ids as in extra_args).
    const auto run_torch = [&](const std::string& what, const std::string& model_dir,
                               const std::string& extra_args) {
      std::map<int, json> torch;
      std::string bl;
      for (int b : batches) bl += (bl.empty() ? "" : ",") + std::to_string(b);
      for (int th : threads) {
        for (const std::string policy : {"", "PASSIVE"}) {
          if (th == 1 && !policy.empty()) continue;
          const std::string env =
              "OMP_NUM_THREADS=" + std::to_string(th) + " OPENBLAS_NUM_THREADS=" + std::to_string(th) +
              " MKL_NUM_THREADS=" + std::to_string(th) + (policy.empty() ? "" : " OMP_WAIT_POLICY=" + policy);
          const std::string cmd = env + " " + python + " " + shell_quote(torch_script) + " " +
                                  shell_quote(model_dir) + extra_args + " --threads " + std::to_string(th) +
                                  " --batches " + bl + " --seconds " + std::to_string(seconds);
          json r = run_command(cmd);
          if (r.contains("error")) {
            notes.push_back("PyTorch " + what + " (" + env + ") failed: " + r["error"].get<std::string>());
            std::cerr << notes.back() << "\n";
            continue;
          }
          for (auto& [b, res] : r["results"].items()) res["env"] = env;
          if (!torch.count(th)) {
            torch[th] = r;
            continue;
          }
          for (auto& [b, res] : r["results"].items())
            if (res["sentences_per_second"].get<double>() >
                torch[th]["results"][b]["sentences_per_second"].get<double>())
              torch[th]["results"][b] = res;
          torch[th]["peak_rss_mb"] =
              std::max(torch[th]["peak_rss_mb"].get<double>(), r["peak_rss_mb"].get<double>());
        }
      }
      return torch;
    };
    std::map<int, json> torch, torch_use_lite;
    if (!torch_script.empty()) {
      torch = run_torch("BERT", dir, "");
      // USE-Lite: its token ids of the benchmark texts first (a child process; fails when not installed).
      const std::string ids_file = dir + "/use_lite_ids.json";
      const json ir =
          run_command(shell_quote(self) + " --ids " + shell_quote(dir) + " " + shell_quote(ids_file));
      if (ir.contains("error"))
        notes.push_back("PyTorch USE-Lite not run: " + ir["error"].get<std::string>());
      else if (!ir.value("equal_lengths", false))
        notes.push_back(
            "PyTorch USE-Lite not run: the texts' USE-Lite token counts differ (no padding support)");
      else
        torch_use_lite = run_torch("USE-Lite", model_cache_dir() + "/use-lite",
                                   " --arch use-lite --ids " + shell_quote(ids_file));
    } else {
      notes.push_back("PyTorch comparison not run (no --torch script)");
    }

    const std::vector<std::pair<std::string, std::string>> encoders = {
        {"bert-minilm-l6", "bert:" + dir},
        {"bert-minilm-l6-int8", "bert:" + dir + ",quant=int8"},
        {"use-lite", "use-lite"}};
    bool use_lite_ok = true;
    for (auto& [label, spec] : encoders) {
      if (label == "use-lite" && !use_lite_ok) continue;
      for (int b : batches)
        for (int th : threads) {
          const std::string key = label + "/" + std::to_string(b) + "/" + std::to_string(th);
          const std::string cmd = shell_quote(self) + " --child " + shell_quote(spec) + " " +
                                  std::to_string(b) + " " + std::to_string(th) + " " +
                                  std::to_string(seconds) + " " + shell_quote(dir);
          json r = run_command(cmd);
          if (r.contains("error")) {
            if (label == "use-lite") {
              use_lite_ok = false;
              notes.push_back("use-lite skipped: " + r["error"].get<std::string>());
              break;
            }
            throw Error(key + ": " + r["error"].get<std::string>());
          }
          json e;
          e["xdrec_sentences_per_second"] = r["xdrec_sentences_per_second"];
          e["xdrec_sentences_per_second_median"] = r["xdrec_sentences_per_second_median"];
          e["peak_rss_mb"] = r["peak_rss_mb"];
          e["load_seconds"] = r["load_seconds"];
          e["pytorch_sentences_per_second"] = nullptr;
          const bool is_bert = label.rfind("bert", 0) == 0;
          std::map<int, json>& tm = is_bert ? torch : torch_use_lite;
          if (tm.count(th)) {
            const json& tr = tm[th];
            const std::string bk = std::to_string(b);
            if (tr.contains("results") && tr["results"].contains(bk)) {
              const double ps = tr["results"][bk]["sentences_per_second"].get<double>();
              e["pytorch_sentences_per_second"] = ps;
              e["pytorch_sentences_per_second_median"] = tr["results"][bk]["sentences_per_second_median"];
              e["pytorch_env"] = tr["results"][bk]["env"];
              e["pytorch_peak_rss_mb"] = tr["peak_rss_mb"];
              e["speedup_vs_pytorch"] = r["xdrec_sentences_per_second"].get<double>() / ps;
              if (label.find("int8") != std::string::npos)
                e["pytorch_variant"] = "float32 (no int8 counterpart)";
            }
            if (tr.contains("check") && r.contains("check")) {
              double worst = 0, worst_abs = 0;
              for (size_t i = 0; i < r["check"].size(); ++i) {
                const auto a = r["check"][i].get<std::vector<float>>();
                const auto b2 = tr["check"][i].get<std::vector<float>>();
                worst = std::max(worst, rel_diff(a, b2));
                worst_abs = std::max(worst_abs, max_abs_diff(a, b2));
              }
              e["max_relative_difference_vs_pytorch"] = worst;
              e["max_abs_difference_vs_pytorch"] = worst_abs;
              if (!is_bert) {
                e["pytorch_check"] = worst_abs <= kUseLiteCheckTolerance ? "passed" : "FAILED";
                e["pytorch_check_tolerance"] = kUseLiteCheckTolerance;
              }
            }
          }
          if (label == "use-lite") {
            e["note"] = "same texts; USE-Lite embeds at most 128 of its own tokens";
            if (r.contains("tokens_per_text")) e["tokens_per_text"] = r["tokens_per_text"];
          }
          out[key] = e;
          std::cerr << key << " done\n";
        }
    }
    if (!notes.empty()) out["notes"] = notes;
    out["setup"] = {
        {"model", "BERT hidden 384, 6 layers, 12 heads, intermediate 1536, vocab 30522, random weights"},
        {"tokens_per_text", kWords + 2},
        {"texts", kTexts},
        {"seconds_per_configuration", seconds},
        {"load_average_1min_before_after", json::array({load_before, loadavg()})},
        {"hardware_threads", std::thread::hardware_concurrency()},
        {"throughput", "best of rounds of at least max(0.25 s, seconds / 8) each (median also given)"},
        {"pytorch", torch.empty() ? json() : torch.begin()->second.value("version", json())},
        {"pytorch_use_lite",
         "USE-Lite re-implemented in bench/encoders_torch.py with the TF.js model's weights; same token ids; "
         "check passes when the max abs difference of the first 4 vectors is <= 1e-4"}};
    write_file_atomic(out_path, out.dump(2) + "\n");

    std::printf("%-30s %12s %12s %8s %10s %10s %10s\n", "encoder/batch/threads", "xdrec sent/s",
                "torch sent/s", "speedup", "peak MiB", "rel. diff", "abs. diff");
    auto fmt = [](const char* f, double v) {
      char buf[64];
      std::snprintf(buf, sizeof buf, f, v);
      return std::string(buf);
    };
    for (auto& [key, e] : out.items()) {
      if (key == "notes" || key == "setup") continue;
      const bool has_t = !e["pytorch_sentences_per_second"].is_null();
      const std::string ts = has_t ? fmt("%.1f", e["pytorch_sentences_per_second"].get<double>()) : "-";
      const std::string sp = has_t ? fmt("%.2fx", e["speedup_vs_pytorch"].get<double>()) : "-";
      const std::string rd = e.contains("max_relative_difference_vs_pytorch")
                                 ? fmt("%.1e", e["max_relative_difference_vs_pytorch"].get<double>())
                                 : "-";
      std::string ad = e.contains("max_abs_difference_vs_pytorch")
                           ? fmt("%.1e", e["max_abs_difference_vs_pytorch"].get<double>())
                           : "-";
      if (e.contains("pytorch_check") && e["pytorch_check"] != "passed") ad += " FAILED";
      std::printf("%-30s %12.1f %12s %8s %10.1f %10s %10s\n", key.c_str(),
                  e["xdrec_sentences_per_second"].get<double>(), ts.c_str(), sp.c_str(),
                  e["peak_rss_mb"].get<double>(), rd.c_str(), ad.c_str());
    }
    for (auto& n : notes) std::printf("note: %s\n", n.c_str());
    std::printf(
        "load average (1 min) before/after: %s / %s on %u hardware threads; throughput = best round\n",
        load_before.c_str(), out["setup"]["load_average_1min_before_after"][1].get<std::string>().c_str(),
        std::thread::hardware_concurrency());
    if (model_dir.empty()) fs::remove_all(dir);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_encoders: %s\n", e.what());
    return 1;
  }
}
