// xdrec encode / xdrec embed.
#include <charconv>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>

#include "cli/commands.h"
#include "cli/progress.h"
#include "data/text.h"
#include "xdrec/embed.h"
#include "xdrec/encoder.h"
#include "xdrec/pipeline.h"
#include "xdrec/tensor_io.h"

namespace xdrec::cli {

namespace {

// Texts one per line: "\r\n" endings accepted, a final line without a newline counted, "\n" inside a line
// is a newline and "\\" a backslash (any other backslash is literal). Invalid UTF-8 throws ParseError with
// the line and column.
std::vector<std::string> read_lines(const std::string& bytes, const std::string& name) {
  std::vector<std::string> out;
  size_t pos = 0, line_no = 0;
  while (pos < bytes.size()) {
    size_t end = bytes.find('\n', pos);
    if (end == std::string::npos) end = bytes.size();
    std::string_view line(bytes.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t bad = data::find_invalid_utf8(line);
    if (bad != std::string::npos) throw ParseError(name, line_no, bad + 1, "invalid UTF-8");
    std::string text;
    text.reserve(line.size());
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size() && (line[i + 1] == 'n' || line[i + 1] == '\\')) {
        text.push_back(line[i + 1] == 'n' ? '\n' : '\\');
        ++i;
      } else {
        text.push_back(line[i]);
      }
    }
    out.push_back(std::move(text));
  }
  return out;
}

void write_out(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size())
    throw Error("encode: cannot write to standard output");
}

}  // namespace

int cmd_encode(const EncodeArgs& a, const Common& c) {
  std::unique_ptr<TextEncoder> enc = cli_encoder(a.encoder, c.quiet);
  if (a.ids) (void)enc->token_ids("");  // fail before reading input when the encoder has no tokenizer
  std::string input(std::istreambuf_iterator<char>(std::cin), {});
  const std::vector<std::string> texts = read_lines(input, "<stdin>");
  std::string().swap(input);

  if (a.ids) {
    std::string out;
    for (auto& t : texts) {
      out = "[";
      bool first = true;
      for (int32_t id : enc->token_ids(t)) out += (first ? "" : ",") + std::to_string(id), first = false;
      out += "]\n";
      write_out(out);
    }
    std::fflush(stdout);
    return 0;
  }

  double fit_s = 0;
  if (enc->needs_fit() && (!texts.empty() || !a.fit_on.empty())) {
    Timer ft;
    if (!a.fit_on.empty()) {
      const std::vector<std::string> corpus = read_lines(read_file(a.fit_on), a.fit_on);
      check(!corpus.empty(), "encode: --fit-on " + a.fit_on + " has no lines");
      enc->fit(corpus, c.threads);
    } else {
      enc->fit(texts, c.threads);
    }
    fit_s = ft.seconds();
  }
  Timer et;
  const size_t chunk = 256;
  char num[32];
  for (size_t b = 0; b < texts.size(); b += chunk) {
    const size_t e = std::min(texts.size(), b + chunk);
    const Matrix m = enc->encode(std::span<const std::string>(texts.data() + b, e - b), c.threads);
    std::string out;
    for (size_t i = 0; i < m.rows; ++i) {
      out += '[';
      for (size_t j = 0; j < m.cols; ++j) {
        if (j) out += ',';
        // Shortest text that reads back as the same float (at most 9 significant digits).
        const auto res = std::to_chars(num, num + sizeof num, m(i, j));
        out.append(num, res.ptr);
      }
      out += "]\n";
    }
    write_out(out);
  }
  std::fflush(stdout);
  const double enc_s = et.seconds();
  if (!c.quiet)
    std::fprintf(stderr, "encode: %zu texts with %s (dim %zu): fit %.2f s, encode %.2f s (%.0f texts/s)\n",
                 texts.size(), enc->spec().c_str(), enc->dim(), fit_s, enc_s,
                 enc_s > 0 ? double(texts.size()) / enc_s : 0.0);
  return 0;
}

int cmd_embed(const EmbedArgs& a, const Common& c) {
  check_item_template(a.template_text);
  check(a.batch > 0, "embed: --batch must be positive");
  std::unique_ptr<TextEncoder> enc = cli_encoder(a.encoder, c.quiet);
  Dataset ds = load_data(a.data, c.quiet, c.threads);
  EmbedOptions opt;
  opt.item_template = a.template_text;
  opt.cache_dir = a.cache_dir;
  opt.batch = a.batch;
  opt.threads = c.threads;
  opt.progress = progress_bar(!c.quiet);
  const TextVectors tv = embed_dataset(ds, *enc, opt);
  // Counted on the rendered texts (tags included), so this is exactly what got a zero row.
  if (!c.quiet && (tv.items_with_text < ds.n_items() || tv.users_with_text < ds.n_users()))
    std::fprintf(stderr, "embed: %zu items without text and %zu users without a profile get rows of zeros\n",
                 size_t(ds.n_items()) - tv.items_with_text, size_t(ds.n_users()) - tv.users_with_text);
  if (!a.output.empty()) save_text_vectors(a.output, tv, ds, opt);
  const EmbedStats& s = tv.stats;
  std::printf("embed: %zu items + %zu users with %s (dim %zu)\n", tv.items.rows, tv.users.rows,
              tv.encoder_spec.c_str(), tv.items.cols);
  char fit[64] = "";
  if (enc->needs_fit()) std::snprintf(fit, sizeof fit, "; fit %.2f s", s.fit_seconds);
  std::printf("  %zu texts, %zu distinct: %zu from the cache, %zu encoded in %.2f s (%.1f texts/s)%s\n",
              s.texts, s.unique, s.cached, s.encoded, s.encode_seconds, s.texts_per_second(), fit);
  if (!a.output.empty()) std::printf("  -> %s\n", a.output.c_str());
  return 0;
}

}  // namespace xdrec::cli
