// xdrec command-line tool: a thin layer over the library. Every command prints one clear line and exits
// non-zero on an error.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "xdrec/common.h"

int main(int argc, char** argv) {
  using namespace xdrec::cli;
  CLI::App app{"xdrec: cross-domain recommendation engine"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("xdrec 0.1.0"));

  Common common;
  auto add_text = [](CLI::App* sub, xdrec::cli::TextArgs& t) {
    sub->add_option("--encoder", t.encoder,
                    "text encoder for text models: auto (use-lite when installed, else tfidf), use-lite, "
                    "bert:DIR, tfidf, glove, http:URL (default: no text)");
    sub->add_option("--item-template", t.item_template,
                    "item text template ({title}, {description}, {categories}, {domain}, {id})")
        ->capture_default_str();
    sub->add_option("--cache-dir", t.cache_dir, "embedding cache directory");
  };
  auto add_dp = [](CLI::App* sub, xdrec::cli::DpArgs& d) {
    sub->add_option("--dp-delta", d.delta,
                    "train with user-level DP-SGD at this delta (sets the model's dp_delta and dp=true; "
                    "models with dp_* parameters only)")
        ->check(CLI::Range(1e-300, 0.5));
    sub->add_option("--dp-epsilon", d.epsilon,
                    "train with user-level DP-SGD at this target epsilon: the smallest noise that reaches it "
                    "(sets dp_epsilon)")
        ->check(CLI::Range(1e-9, 1e6));
  };
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--threads", common.threads, "worker threads (0 = all cores)")->capture_default_str();
    sub->add_option("--seed", common.seed, "random seed")->capture_default_str();
    sub->add_flag("--quiet", common.quiet, "no progress bars");
  };

  // import
  ImportArgs imp;
  auto* c_import = app.add_subcommand("import",
                                      "read a dataset (canonical files or a known format), validate it "
                                      "and write a binary dataset file");
  c_import->add_option("input", imp.input, "input directory or file")->required();
  c_import
      ->add_option("--format", imp.format,
                   "auto, canonical, ml-100k, ml-latest-small, douban, food-kitchen, "
                   "disencdr, lastfm")
      ->capture_default_str();
  c_import->add_option("--on-error", imp.on_error, "fail (default) or skip malformed records")
      ->check(CLI::IsMember({"fail", "skip"}))
      ->capture_default_str();
  c_import->add_option("-o,--output", imp.output, "output: FILE.xdb (binary) or a directory (canonical TSV)");
  auto* o_anon = c_import->add_option("--anonymise", imp.anonymise_key,
                                      "key file: replace user and item ids by keyed pseudonyms (HMAC-SHA256) "
                                      "and scrub e-mail addresses, phone "
                                      "numbers, URLs and raw ids from the text (see docs/PRIVACY.md)");
  c_import
      ->add_option("--id-map", imp.id_map,
                   "write the map raw id -> pseudonym here (a secret like the key; not written by default)")
      ->needs(o_anon);
  c_import->add_option("--coarsen-time", imp.coarsen_time, "floor timestamps to the day, week or month (UTC)")
      ->check(CLI::IsMember({"none", "day", "week", "month"}))
      ->needs(o_anon)
      ->capture_default_str();
  add_common(c_import);

  // split
  SplitArgs spl;
  auto* c_split =
      app.add_subcommand("split", "split a dataset into train / validation / test without leakage");
  c_split->add_option("data", spl.data.path, "dataset: directory, FILE.xdb or synthetic[:k=v,...]")
      ->required();
  c_split->add_option("--format", spl.data.format, "input format")->capture_default_str();
  c_split->add_option("--protocol", spl.protocol, "random, leave-last-out, cold-users, cold-items, fixed")
      ->capture_default_str();
  c_split->add_option("--test", spl.opt.test_ratio, "test fraction (random)")->capture_default_str();
  c_split->add_option("--val", spl.opt.val_ratio, "validation fraction of the rest")->capture_default_str();
  c_split->add_option("--cold", spl.opt.cold_ratio, "fraction of users/items made cold")
      ->capture_default_str();
  c_split->add_option("--target-domain", spl.target_domain, "target domain name (cold-users)");
  c_split->add_option("-o,--output", spl.output, "output directory")->required();
  add_common(c_split);

  // train
  TrainArgs tr;
  auto* c_train = app.add_subcommand("train", "fit a model and save it");
  c_train->add_option("data,--data", tr.data.path, "dataset: directory, FILE.xdb or synthetic[:k=v,...]")
      ->required();
  c_train->add_option(
      "--events", tr.events,
      "event log of `xdrec serve` (SQLite) to fold in: positive feedback as interactions, added "
      "items, deletions");
  c_train->add_option("--format", tr.data.format, "input format")->capture_default_str();
  c_train->add_option("--split", tr.split_dir,
                      "split directory written by `xdrec split` (trains on its train part)");
  c_train->add_option("-m,--model", tr.model,
                      "model spec, e.g. ials:factors=128,reg=0.05 (not with --resume)");
  c_train->add_option(
      "--resume", tr.resume,
      "continue from this saved model with DATA (its data plus new interactions, users and items, "
      "new ones appended): the touched rows first, then --sweeps passes (incremental update)");
  c_train->add_option(
      "--since", tr.since,
      "with --resume: interactions with a timestamp after this (seconds) are the new ones (default: "
      "every user counts as touched)");
  c_train
      ->add_option(
          "--sweeps", tr.sweeps,
          "with --resume: full warm-started passes after the touched rows (ials), or epochs over the "
          "touched and new users' interactions plus as many replayed old ones (bpr, hybrid)")
      ->capture_default_str();
  c_train->add_option("-o,--output", tr.output, "model directory")->required();
  c_train->add_option("--augment", tr.augment,
                      "add generated interactions for the users of a sparse domain before fitting: "
                      "gan|itemknn|popular[:domain=D,per_user=N,max_history=N,weight=W,<generator params>]");
  c_train
      ->add_option("--store", tr.store,
                   "storage of the factor / embedding matrices: fp32, fp16 or int8 (a scale per row); "
                   "loading gives floats back")
      ->check(CLI::IsMember({"fp32", "fp16", "int8"}))
      ->capture_default_str();
  c_train
      ->add_option("--prune", tr.prune,
                   "zero this fraction of each weight matrix of a neural model (twotower, sasrec, cfgan; "
                   "hybrid's text projections) by magnitude, per matrix, and store it sparsely")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  c_train->add_flag("--distributed", tr.distributed,
                    "fit over the processes of an MPI job (mpirun -np N xdrec train ... --distributed); the "
                    "model equals the one-process fit bitwise and rank 0 writes it");
  c_train->add_flag("--verbose", tr.verbose,
                    "per-iteration lines on stderr (iALS: wall and CPU time; per rank, with the time spent "
                    "communicating, when distributed)");
  add_dp(c_train, tr.dp);
  add_text(c_train, tr.text);
  add_common(c_train);

  // eval
  EvalArgs ev;
  auto* c_eval = app.add_subcommand("eval", "train and evaluate models on a split (full ranking by default)");
  c_eval->add_option("data", ev.data.path, "dataset: directory, FILE.xdb or synthetic[:k=v,...]")->required();
  c_eval->add_option("--format", ev.data.format, "input format")->capture_default_str();
  c_eval->add_option("--split", ev.split_dir, "split directory written by `xdrec split`");
  c_eval->add_option("--protocol", ev.protocol, "split protocol when no --split is given")
      ->capture_default_str();
  c_eval->add_option("--test", ev.split_opt.test_ratio, "test fraction")->capture_default_str();
  c_eval->add_option("--val", ev.split_opt.val_ratio, "validation fraction of the rest (for --on-validation)")
      ->capture_default_str();
  c_eval->add_option("--cold", ev.split_opt.cold_ratio, "cold fraction")->capture_default_str();
  c_eval->add_option("--target-domain", ev.target_domain, "target domain name (cold-users)");
  c_eval->add_option("-m,--model", ev.models, "model spec (repeatable)")->required();
  c_eval->add_option("-k,--k", ev.ks, "cut-offs (repeatable)");
  c_eval
      ->add_option("--candidates", ev.candidates,
                   "all (default), or cold-items: rank only the items a cold-items split held out (how "
                   "well cold items are ordered among themselves for the users who interacted with them)")
      ->check(CLI::IsMember({"all", "cold-items"}));
  c_eval->add_option("--sampled", ev.sampled,
                     "sampled protocol: rank each target against N same-domain negatives");
  c_eval->add_flag("--on-validation", ev.on_validation,
                   "tuning: fit on the training part and score the validation part (by default the model is "
                   "fitted on training + validation and scored on test)");
  c_eval->add_option("--seeds", ev.n_seeds, "number of split seeds (seed, seed+1, ...) for mean ± 95% CI")
      ->capture_default_str();
  c_eval->add_flag("--distributed", ev.distributed,
                   "spread the (model, seed) runs over the processes of an MPI job (mpirun -np N xdrec eval "
                   "... --distributed); rank 0 gathers the metrics and prints / writes the same results as "
                   "one process");
  c_eval->add_option("--item-vectors", ev.item_vectors,
                     "item vectors from `xdrec embed` for intra-list diversity (default: category vectors)");
  c_eval
      ->add_option(
          "--diversity", ev.diversity,
          "MMR re-ranking trade-offs in [0, 1] to evaluate besides the plain lists, e.g. 0.2,0.5,0.8 "
          "(over the --item-vectors or category vectors; full ranking): the accuracy-diversity curve")
      ->delimiter(',');
  c_eval
      ->add_option(
          "--task", ev.task,
          "ranking (top-K lists) or rating (fit on the ratings; RMSE and MAE of the test ratings, with "
          "the ranking metrics beside)")
      ->capture_default_str();
  c_eval->add_option("--augment", ev.augment,
                     "fit every model on the training part plus generated interactions (as train --augment); "
                     "the rankings exclude only the real training interactions");
  c_eval->add_option("-o,--output", ev.output, "write metrics as JSON");
  add_dp(c_eval, ev.dp);
  add_text(c_eval, ev.text);
  add_common(c_eval);

  // recommend
  RecommendArgs rec;
  auto* c_rec = app.add_subcommand(
      "recommend", "top-K items for users (known users, or a new user's history and/or profile text)");
  c_rec->add_option("--model", rec.model_dir, "model directory written by `xdrec train`")->required();
  c_rec->add_option("--data", rec.data.path, "the dataset the model was trained on")->required();
  c_rec->add_option("--format", rec.data.format, "input format")->capture_default_str();
  c_rec->add_option("--split", rec.split_dir, "split used in training (seen items = its train part)");
  c_rec->add_option("-u,--user", rec.users, "user id (repeatable)");
  c_rec->add_option(
      "--history", rec.history,
      "comma-separated item ids of a new user (fold-in; may lie in another domain than --domain)");
  c_rec->add_option("--profile", rec.profile, "profile text of a new user (text models)");
  c_rec->add_option("--new-item-text", rec.new_item_text,
                    "text of a new item added without retraining (text models); shows its score per user");
  c_rec->add_option("--new-item-domain", rec.new_item_domain, "domain of the new item");
  c_rec->add_option("-k,--k", rec.k, "list length")->capture_default_str();
  c_rec->add_option("--domain", rec.domain, "restrict to one domain");
  c_rec->add_flag("--json", rec.json, "JSON output");
  c_rec
      ->add_option("--index", rec.index,
                   "exact, or the item vectors as codes searched by asymmetric distance (dot-product "
                   "models): sq8[:rerank=N] or pq[:m=8,bits=8,iters=20,rerank=N,seed=42]")
      ->capture_default_str();
  add_common(c_rec);

  // quickstart
  QuickstartArgs qs;
  auto* c_qs = app.add_subcommand("quickstart",
                                  "synthetic multi-domain data -> split -> train -> evaluate -> recommend");
  c_qs->add_option("--users", qs.users, "synthetic users")->capture_default_str();
  c_qs->add_option("--items", qs.items_per_domain, "items per domain")->capture_default_str();
  c_qs->add_option("-o,--output", qs.output, "write metrics as JSON");
  c_qs->add_option("--encoder", qs.encoder, "text encoder of the cold-start demo")->capture_default_str();
  c_qs->add_option("--cache-dir", qs.cache_dir, "embedding cache directory");
  add_common(c_qs);

  // encode
  EncodeArgs enc;
  auto* c_encode = app.add_subcommand("encode",
                                      "encode UTF-8 texts from standard input (one per line; \\n is a "
                                      "newline, \\\\ a backslash) into one JSON vector per line");
  c_encode
      ->add_option("--encoder", enc.encoder,
                   "encoder spec: auto (use-lite when installed, else tfidf), use-lite, bert:DIR, "
                   "tfidf:dim=256, glove, http:URL")
      ->capture_default_str();
  c_encode->add_flag("--ids", enc.ids, "write the token ids instead of the vectors");
  c_encode->add_option("--fit-on", enc.fit_on, "text file (one text per line) to fit a corpus encoder on");
  add_common(c_encode);

  // embed
  EmbedArgs emb;
  auto* c_embed =
      app.add_subcommand("embed", "encode every item and user profile text of a dataset (cached)");
  c_embed->add_option("data", emb.data.path, "dataset: directory, FILE.xdb or synthetic[:k=v,...]")
      ->required();
  c_embed->add_option("--format", emb.data.format, "input format")->capture_default_str();
  c_embed->add_option("--encoder", emb.encoder, "encoder spec")->capture_default_str();
  c_embed->add_option("--template,--item-template", emb.template_text, "item text template")
      ->capture_default_str();
  c_embed->add_option("--cache-dir", emb.cache_dir, "embedding cache directory");
  c_embed->add_option("--batch", emb.batch, "texts per batch")->capture_default_str();
  c_embed->add_option("-o,--output", emb.output, "write item and user vectors (safetensors)");
  add_common(c_embed);

  // models
  auto* c_models = app.add_subcommand("models", "list the registered models and their parameters");

  // serve
  ServeArgs sv;
  auto* c_serve = app.add_subcommand(
      "serve", "serve a trained model over HTTP: recommendations, feedback, new items, a web page");
  c_serve->add_option("--model", sv.model_dir, "model directory written by `xdrec train`")->required();
  c_serve->add_option("--data", sv.data.path, "the dataset the model was trained on")->required();
  c_serve->add_option("--format", sv.data.format, "input format")->capture_default_str();
  c_serve->add_option("--host", sv.host, "address to listen on (a non-loopback one needs --token-file)")
      ->capture_default_str();
  c_serve->add_option("--port", sv.port, "port (0: any free port)")->capture_default_str();
  c_serve->add_option("--db", sv.db, "event log (SQLite; default MODEL/events.sqlite)");
  c_serve->add_option("--token-file", sv.token_file, "file holding the bearer token that writes need");
  c_serve->add_option("--access-log", sv.access_log,
                      "file for JSON access-log lines (default stderr; - for none)");
  c_serve
      ->add_option("--text", sv.text,
                   "item-text encoder for a model without one (new items, diversity, explanations): auto, "
                   "none or an encoder spec")
      ->capture_default_str();
  c_serve
      ->add_option("--retrieval", sv.retrieval,
                   "exact, hnsw, auto (HNSW for large catalogues of dot-product models), or the item "
                   "vectors as codes: sq8[:rerank=N] or pq[:m=8,bits=8,rerank=N,seed=42]")
      ->capture_default_str();
  c_serve->add_option("--split", sv.split_dir,
                      "the split a text model was trained on (when its texts used the split's tags)");
  c_serve->add_option("--max-body", sv.max_body, "largest request body in bytes")->capture_default_str();
  c_serve
      ->add_option("--cache", sv.cache,
                   "lists kept in the recommendation cache (invalidated by the user's feedback and by item "
                   "changes; hit rate in /metrics; 0: none)")
      ->capture_default_str();
  c_serve->add_option("--threads", sv.threads, "worker threads answering requests")->capture_default_str();
  c_serve->add_flag("-q,--quiet", common.quiet, "no start-up messages");

  // replay
  ReplayArgs rp;
  auto* c_replay = app.add_subcommand(
      "replay",
      "replay the feedback loop offline: serve the first part by time, feed the rest back in rounds, "
      "and compare NDCG of each next round with and without the feedback");
  c_replay->add_option("data,--data", rp.data.path, "dataset with timestamps")->required();
  c_replay->add_option("--format", rp.data.format, "input format")->capture_default_str();
  c_replay->add_option("-m,--model", rp.model, "model spec")->capture_default_str();
  c_replay->add_option("--first", rp.first, "share of the interactions (by time) the model is trained on")
      ->capture_default_str();
  c_replay->add_option("--rounds", rp.rounds, "rounds the later interactions are fed back in")
      ->capture_default_str();
  c_replay->add_option("-k", rp.k, "list length")->capture_default_str();
  c_replay->add_option("-o,--output", rp.output, "write the results as JSON");
  add_common(c_replay);

  // report
  ReportArgs rpt;
  auto* c_report = app.add_subcommand(
      "report", "one self-contained HTML page of charts from the JSON of eval, replay and the benchmarks");
  c_report
      ->add_option("inputs", rpt.inputs,
                   "JSON files (xdrec eval -o, xdrec replay -o, bench/ratings, bench/serve)")
      ->required();
  c_report->add_option("-o,--output", rpt.output, "HTML file")->capture_default_str();
  c_report->add_option("--title", rpt.title, "page title")->capture_default_str();

  // privacy
  PrivacyArgs pv;
  auto* c_privacy =
      app.add_subcommand("privacy", "differential-privacy accounting of DP-SGD (subsampled Gaussian, RDP)");
  c_privacy->require_subcommand(1);
  auto add_mechanism = [&](CLI::App* sub) {
    sub->add_option("--q", pv.q, "sampling rate (batch size / examples; 1 = no subsampling)")->required();
    sub->add_option("--steps", pv.steps, "training steps")->required();
    sub->add_option("--delta", pv.delta, "delta of the (epsilon, delta) guarantee")->required();
    sub->add_option("--conversion", pv.conversion,
                    "RDP to (epsilon, delta): classic (Mironov 2017) or improved (Balle et al. 2020)")
        ->check(CLI::IsMember({"classic", "improved"}))
        ->capture_default_str();
    sub->add_option("--orders", pv.orders, "RDP orders > 1, comma-separated (default: the integers 2..256)")
        ->delimiter(',');
  };
  auto* c_epsilon = c_privacy->add_subcommand("epsilon", "epsilon spent by DP-SGD training (printed first)");
  add_mechanism(c_epsilon);
  c_epsilon->add_option("--noise", pv.noise, "noise multiplier (noise std / clipping norm)")->required();
  auto* c_noise =
      c_privacy->add_subcommand("noise", "smallest noise multiplier that keeps epsilon at a target");
  add_mechanism(c_noise);
  c_noise->add_option("--epsilon", pv.epsilon, "target epsilon")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*c_import) return cmd_import(imp, common);
    if (*c_split) return cmd_split(spl, common);
    if (*c_train) return cmd_train(tr, common);
    if (*c_eval) return cmd_eval(ev, common);
    if (*c_rec) {
      rec.profile_given = c_rec->count("--profile") > 0;
      return cmd_recommend(rec, common);
    }
    if (*c_qs) return cmd_quickstart(qs, common);
    if (*c_serve) return cmd_serve(sv, common);
    if (*c_replay) return cmd_replay(rp, common);
    if (*c_report) return cmd_report(rpt);
    if (*c_models) return cmd_models();
    if (*c_epsilon) return cmd_privacy_epsilon(pv);
    if (*c_noise) return cmd_privacy_noise(pv);
    if (*c_encode) return cmd_encode(enc, common);
    if (*c_embed) return cmd_embed(emb, common);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xdrec: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
