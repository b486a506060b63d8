// The server end to end: a real HttpServer on a loopback port (in process) answering a real HTTP client, and
// the `xdrec serve` binary killed with SIGKILL in the middle of a burst of feedback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "serve/event_log.h"
#include "test_util.h"
#include "xdrec/embed.h"
#include "xdrec/encoder.h"
#include "xdrec/pipeline.h"
#include "xdrec/recommender.h"
#include "xdrec/serve.h"
#include "xdrec/synthetic.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace xdrec;
using namespace xdrec::serve;

namespace {

const char* kToken = "test-token-123";

Dataset small_data() {
  SyntheticOptions so;
  so.n_users = 300;
  so.items_per_domain = 80;
  so.seed = 7;
  return make_synthetic(so);
}

std::string temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("xdrec_serve_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

// Trains iALS on the data and saves it into dir/model.
std::string train_model(const Dataset& ds, const std::string& dir,
                        const std::string& spec = "ials:factors=16") {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.item_domain = ds.item_domain;
  m->fit(ds.user_item_matrix(), ctx);
  const std::string md = dir + "/model";
  save_model(*m, md, ds.fingerprint());
  return md;
}

// A Service and an HttpServer on a free loopback port, serving on a thread.
struct Running {
  std::unique_ptr<Service> svc;
  std::unique_ptr<HttpServer> http;
  std::thread th;
  int port = 0;
  Running(const Dataset& ds, const ServiceOptions& so, HttpOptions ho = {}) {
    svc = std::make_unique<Service>(ds, so);
    ho.port = 0;
    if (ho.token.empty()) ho.token = kToken;
    ho.access_log = "-";
    http = std::make_unique<HttpServer>(*svc, ho);
    http->bind();
    port = http->port();
    th = std::thread([this] { http->serve(); });
  }
  ~Running() {
    http->stop();
    th.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(20, 0);
    return c;
  }
};

httplib::Headers auth() {
  return {{"Authorization", std::string("Bearer ") + kToken}};
}

json body(const httplib::Result& r) {
  return r && !r->body.empty() ? json::parse(r->body) : json();
}

std::vector<std::string> items_of(const json& list) {
  std::vector<std::string> out;
  for (auto& x : list["items"]) out.push_back(x["item"].get<std::string>());
  return out;
}

ServiceOptions options(const std::string& model_dir, const std::string& db,
                       const std::string& text = "tfidf") {
  ServiceOptions so;
  so.model_dir = model_dir;
  so.db = db;
  so.text = text;
  so.quiet = true;
  so.threads = 1;
  return so;
}

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ds_ = new Dataset(small_data());
    dir_ = new std::string(temp_dir("suite"));
    model_ = new std::string(train_model(*ds_, *dir_));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete ds_;
    delete dir_;
    delete model_;
  }
  // A fresh event log per test.
  std::string db(const std::string& name) { return *dir_ + "/" + name + ".sqlite"; }
  static Dataset* ds_;
  static std::string *dir_, *model_;
};
Dataset* ServeTest::ds_ = nullptr;
std::string* ServeTest::dir_ = nullptr;
std::string* ServeTest::model_ = nullptr;

}  // namespace

TEST_F(ServeTest, HealthAndRecommendNeverReturnSeenItems) {
  Running s(*ds_, options(*model_, db("health")));
  auto c = s.client();
  auto h = body(c.Get("/health"));
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["items"], ds_->n_items());
  EXPECT_EQ(h["users"], ds_->n_users());
  EXPECT_NE(h["model"].get<std::string>().find("ials:"), std::string::npos);

  const Csr seen = ds_->user_item_matrix();
  for (uint32_t u : {0u, 5u, 77u}) {
    const std::string uid = ds_->users.name(u);
    auto r = c.Get(("/v1/recommend?user=" + uid + "&k=12").c_str());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json j = json::parse(r->body);
    EXPECT_EQ(j["user"], uid);
    ASSERT_EQ(j["items"].size(), 12u);
    float prev = INFINITY;
    for (auto& x : j["items"]) {
      const uint32_t i = *ds_->items.find(x["item"].get<std::string>());
      auto row = seen.row_indices(u);
      EXPECT_FALSE(std::binary_search(row.begin(), row.end(), i)) << "seen item " << x["item"] << " returned";
      EXPECT_LE(x["score"].get<float>(), prev);
      prev = x["score"].get<float>();
    }
    // Domain filter.
    auto d = body(c.Get(("/v1/recommend?user=" + uid + "&k=5&domain=films").c_str()));
    for (auto& x : d["items"]) EXPECT_EQ(x["domain"], "films");
  }
}

TEST_F(ServeTest, WritesNeedTheTokenAndFeedbackChangesTheNextList) {
  Running s(*ds_, options(*model_, db("feedback")));
  auto c = s.client();
  const std::string uid = ds_->users.name(3);
  const auto before = items_of(body(c.Get(("/v1/recommend?user=" + uid + "&k=10").c_str())));
  ASSERT_EQ(before.size(), 10u);
  const json fb{{"user", uid}, {"item", before[0]}, {"type", "purchase"}};
  auto r = c.Post("/v1/feedback", fb.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_NE(body(r)["error"].get<std::string>().find("Bearer"), std::string::npos);
  r = c.Post("/v1/feedback", {{"Authorization", "Bearer wrong-token-xx"}}, fb.dump(), "application/json");
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(body(c.Get(("/v1/feedback?user=" + uid).c_str(), auth()))["events"].size(), 0u)
      << "a refused write stored";
  // The list did not change either.
  EXPECT_EQ(items_of(body(c.Get(("/v1/recommend?user=" + uid + "&k=10").c_str()))), before);

  r = c.Post("/v1/feedback", auth(), fb.dump(), "application/json");
  ASSERT_EQ(r->status, 202) << r->body;
  EXPECT_EQ(body(r)["stored"], 1);
  const auto after = items_of(body(c.Get(("/v1/recommend?user=" + uid + "&k=10").c_str())));
  EXPECT_EQ(std::count(after.begin(), after.end(), before[0]), 0) << "the purchased item is offered again";
  EXPECT_NE(after, std::vector<std::string>(before.begin() + 1, before.end()))
      << "the fold-in changed nothing";
  const json ev = body(c.Get(("/v1/feedback?user=" + uid).c_str(), auth()));
  ASSERT_EQ(ev["events"].size(), 1u);
  EXPECT_EQ(ev["events"][0]["item"], before[0]);
  EXPECT_EQ(ev["events"][0]["type"], "purchase");
  // Reading someone's events needs the token too.
  EXPECT_EQ(c.Get(("/v1/feedback?user=" + uid).c_str())->status, 401);

  // An array of events; a new user comes into being with their first positive event.
  const json batch = json::array(
      {{{"user", "newcomer"}, {"item", before[1]}, {"type", "like"}},
       {{"user", "newcomer"}, {"item", before[2]}, {"type", "click"}, {"timestamp", 1700000000}}});
  r = c.Post("/v1/feedback", auth(), batch.dump(), "application/json");
  ASSERT_EQ(r->status, 202) << r->body;
  const auto fresh = items_of(body(c.Get("/v1/recommend?user=newcomer&k=5")));
  ASSERT_EQ(fresh.size(), 5u);
  for (auto& i : fresh) EXPECT_TRUE(i != before[1] && i != before[2]);
}

TEST_F(ServeTest, DislikePushesSimilarItemsDown) {
  Running s(*ds_, options(*model_, db("dislike")));
  auto c = s.client();
  const std::string uid = ds_->users.name(11);
  const auto before = items_of(body(c.Get(("/v1/recommend?user=" + uid + "&k=10").c_str())));
  const std::string x = before[0];
  // The candidates most like x by text (the similarity the penalty uses).
  const auto sim = body(c.Get(("/v1/similar?item=" + x + "&k=30").c_str()));
  ASSERT_EQ(sim["by"], "factors");
  auto r = c.Post("/v1/feedback", auth(), json{{"user", uid}, {"item", x}, {"type", "dislike"}}.dump(),
                  "application/json");
  ASSERT_EQ(r->status, 202);
  const auto after = items_of(body(c.Get(("/v1/recommend?user=" + uid + "&k=10").c_str())));
  EXPECT_EQ(std::count(after.begin(), after.end(), x), 0);
  // The list's mean similarity to x (by the model's item vectors, as the penalty measures it) falls.
  auto mean_sim = [&](const std::vector<std::string>& list) {
    const auto v =
        body(c.Get(("/v1/similar?item=" + x + "&k=" + std::to_string(ds_->n_items() - 1)).c_str()));
    std::map<std::string, double> m;
    for (auto& e : v["items"]) m[e["item"]] = e["similarity"].get<double>();
    double s = 0;
    size_t n = 0;
    for (auto& i : list)
      if (i != x) s += m[i], ++n;
    return s / double(n);
  };
  EXPECT_LT(mean_sim(after), mean_sim(before));
}

TEST_F(ServeTest, NewItemByTextIsServableAndDeletedItemsVanish) {
  Running s(*ds_, options(*model_, db("items")));
  auto c = s.client();
  const json item{{"item", "brand-new-1"},
                  {"domain", "films"},
                  {"title", "The Robot of the Neural Ocean"},
                  {"description", "a drone and a circuit"}};
  auto r = c.Post("/v1/items", item.dump(), "application/json");
  EXPECT_EQ(r->status, 401);
  r = c.Post("/v1/items", auth(), item.dump(), "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(body(r)["placed_by"], "text neighbours");  // ials cannot add items itself
  EXPECT_EQ(c.Post("/v1/items", auth(), item.dump(), "application/json")->status, 409);
  auto sim = c.Get("/v1/similar?item=brand-new-1&k=5");
  ASSERT_EQ(sim->status, 200) << sim->body;
  const json sj = json::parse(sim->body);
  EXPECT_EQ(sj["items"].size(), 5u);
  for (auto& x : sj["items"]) EXPECT_NE(x["item"], "brand-new-1");
  // It is in the catalogue of lists: some user of films gets it in a long enough list.
  bool listed = false;
  for (uint32_t u = 0; u < 60 && !listed; ++u) {
    const auto l =
        items_of(body(c.Get(("/v1/recommend?user=" + ds_->users.name(u) + "&k=40&domain=films").c_str())));
    listed = std::count(l.begin(), l.end(), std::string("brand-new-1")) > 0;
  }
  EXPECT_TRUE(listed) << "the new item is never recommended";

  // Delete the top item of a user: gone from every list and from similar.
  const std::string uid = ds_->users.name(4);
  const auto before = items_of(body(c.Get(("/v1/recommend?user=" + uid + "&k=10").c_str())));
  EXPECT_EQ(c.Delete(("/v1/items/" + before[0]).c_str())->status, 401);
  ASSERT_EQ(c.Delete(("/v1/items/" + before[0]).c_str(), auth())->status, 200);
  EXPECT_EQ(c.Delete(("/v1/items/" + before[0]).c_str(), auth())->status, 404);
  for (uint32_t u = 0; u < 50; ++u) {
    const auto l = items_of(body(c.Get(("/v1/recommend?user=" + ds_->users.name(u) + "&k=20").c_str())));
    EXPECT_EQ(std::count(l.begin(), l.end(), before[0]), 0);
  }
  EXPECT_EQ(c.Get(("/v1/similar?item=" + before[0]).c_str())->status, 404);
  EXPECT_EQ(body(c.Get("/health"))["items"], ds_->n_items());  // one added, one deleted
}

TEST_F(ServeTest, NewUserByHistoryAndDiversityAndExplanations) {
  Running s(*ds_, options(*model_, db("newuser")));
  auto c = s.client();
  const json q{{"history", {ds_->items.name(0), ds_->items.name(1), ds_->items.name(90)}},
               {"k", 8},
               {"explain", true}};
  auto r = c.Post("/v1/recommend", q.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  ASSERT_EQ(j["items"].size(), 8u);
  for (auto& x : j["items"]) {
    EXPECT_NE(x["item"], ds_->items.name(0));
    ASSERT_TRUE(x.contains("explanation"));
    EXPECT_EQ(x["explanation"]["method"], "contribution");
    EXPECT_EQ(x["explanation"]["because"].size(), 3u);
  }
  // ials explanations are exact: the contributions of the whole history add up to the score.
  {
    auto m = load_model(*model_);
    const std::vector<uint32_t> h{0, 1, 90};
    const uint32_t nu = m->fold_in(m->n_users(), h, {});
    Matrix sc;
    const uint32_t us[1] = {nu};
    m->score(us, sc, 1);
    std::vector<float> contrib;
    ASSERT_TRUE(m->explain(h, {}, 5, contrib));
    EXPECT_NEAR(contrib[0] + contrib[1] + contrib[2], sc(0, 5), 1e-4);
  }
  // A profile is refused by a model without text, with the reason.
  r = c.Post("/v1/recommend", json{{"profile", "robots"}}.dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(body(r)["error"].get<std::string>().find("profile"), std::string::npos);

  // Diversity: MMR lowers the list's mean pairwise similarity; quotas cap a domain; explore marks its slots.
  const std::string uid = ds_->users.name(20);
  auto ild = [&](const std::vector<std::string>& l) {  // mean pairwise text similarity, as MMR measures it
    double s = 0;
    size_t n = 0;
    for (auto& a : l) {
      const auto v =
          body(c.Get(("/v1/similar?by=text&item=" + a + "&k=" + std::to_string(ds_->n_items() - 1)).c_str()));
      std::map<std::string, double> m;
      for (auto& e : v["items"]) m[e["item"]] = e["similarity"].get<double>();
      for (auto& b : l)
        if (a != b) s += m[b], ++n;
    }
    return s / double(n);
  };
  const auto plain = items_of(body(c.Get(("/v1/recommend?user=" + uid + "&k=10").c_str())));
  const auto diverse = items_of(body(c.Get(("/v1/recommend?user=" + uid + "&k=10&diversity=0.7").c_str())));
  EXPECT_LT(ild(diverse), ild(plain));
  const auto quota = body(c.Get(("/v1/recommend?user=" + uid + "&k=10&quota=books:2,films:2").c_str()));
  std::map<std::string, int> per;
  for (auto& x : quota["items"]) ++per[x["domain"].get<std::string>()];
  EXPECT_LE(per["books"], 2);
  EXPECT_LE(per["films"], 2);
  const auto ex = body(c.Get(("/v1/recommend?user=" + uid + "&k=10&explore=1&seed=3&explain=1").c_str()));
  int explored = 0;
  for (auto& x : ex["items"]) explored += x.value("explore", false);
  EXPECT_GT(explored, 0);
}

TEST_F(ServeTest, EmbeddingsAndMetrics) {
  Running s(*ds_, options(*model_, db("emb")));
  auto c = s.client();
  auto r =
      c.Post("/v1/embeddings", json{{"input", {"a robot", "a kitchen knife"}}}.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][1]["index"], 1);
  EXPECT_GT(j["data"][0]["embedding"].size(), 10u);
  EXPECT_NE(j["data"][0]["embedding"], j["data"][1]["embedding"]);
  EXPECT_EQ(c.Post("/v1/embeddings", json{{"input", 3}}.dump(), "application/json")->status, 400);
  c.Get("/v1/recommend?user=nobody");
  // A request is counted right after its answer is sent, by the worker that answered it (workers may count
  // out of order on a loaded machine): wait until both are.
  std::string m;
  for (int i = 0; i < 250; ++i) {
    m = c.Get("/metrics")->body;
    if (m.find("route=\"GET /v1/recommend\",status=\"404\"") != std::string::npos &&
        m.find("route=\"POST /v1/embeddings\",status=\"200\"") != std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(m.find("xdrec_http_requests_total{route=\"POST /v1/embeddings\",status=\"200\"} 1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("xdrec_http_requests_total{route=\"GET /v1/recommend\",status=\"404\"} 1"),
            std::string::npos);
  EXPECT_NE(m.find("xdrec_http_request_seconds_bucket"), std::string::npos);
  EXPECT_NE(m.find("xdrec_events_stored 0"), std::string::npos);
  EXPECT_NE(m.find("xdrec_model_info{spec=\"ials:"), std::string::npos);
  EXPECT_NE(c.Get("/")->body.find("<title>xdrec</title>"), std::string::npos);
}

TEST_F(ServeTest, RecommendationCacheHitsAndIsInvalidatedByFeedbackAndItemChanges) {
  // The same lists with and without the cache, hits counted, a user's feedback and an item change seen.
  ServiceOptions with = options(*model_, db("cache"));
  with.cache_entries = 100;
  Service cached(*ds_, with);
  ServiceOptions without = options(*model_, db("nocache"));
  without.cache_entries = 0;
  Service plain(*ds_, without);
  auto metric = [&](const std::string& name) {
    const std::string m = cached.metrics_text();
    const size_t at = m.find("\n" + name + " ");
    EXPECT_NE(at, std::string::npos) << name;
    return std::stod(m.substr(at + name.size() + 2));
  };
  RecommendQuery q;
  q.k = 8;
  const std::string a = ds_->users.name(4), b = ds_->users.name(9);
  for (int round = 0; round < 3; ++round)
    for (const auto& u : {a, b}) {
      q.user = u;
      EXPECT_EQ(cached.recommend(q), plain.recommend(q));
    }
  EXPECT_EQ(metric("xdrec_rec_cache_misses_total"), 2);
  EXPECT_EQ(metric("xdrec_rec_cache_hits_total"), 4);
  EXPECT_EQ(metric("xdrec_rec_cache_entries"), 2);
  // Feedback of user a: a's next list is recomputed (and changes), b's is still a hit.
  q.user = a;
  const auto before = items_of(cached.recommend(q));
  const Feedback fb{a, before[0], "purchase", 0};
  cached.add_feedback(std::span<const Feedback>(&fb, 1));
  plain.add_feedback(std::span<const Feedback>(&fb, 1));
  const json after = cached.recommend(q);
  EXPECT_EQ(after, plain.recommend(q));
  const auto after_items = items_of(after);
  EXPECT_EQ(std::count(after_items.begin(), after_items.end(), before[0]), 0);
  q.user = b;
  const double hits = metric("xdrec_rec_cache_hits_total");
  const json bl = cached.recommend(q);
  EXPECT_EQ(metric("xdrec_rec_cache_hits_total"), hits + 1);
  // Deleting an item b was offered invalidates every list.
  const std::string gone = items_of(bl)[0];
  cached.delete_item(gone);
  plain.delete_item(gone);
  const json bl2 = cached.recommend(q);
  EXPECT_EQ(bl2, plain.recommend(q));
  for (const auto& i : items_of(bl2)) EXPECT_NE(i, gone);
  EXPECT_GT(metric("xdrec_rec_cache_hit_ratio"), 0.0);
}

TEST_F(ServeTest, BadInputGetsAClear4xxAndTheServerKeepsServing) {
  HttpOptions ho;
  ho.max_body = 4096;
  ho.read_timeout_s = 1;
  ho.threads = 2;
  Running s(*ds_, options(*model_, db("bad")), ho);
  auto c = s.client();
  const std::string uid = ds_->users.name(1), iid = ds_->items.name(1);
  struct Case {
    std::string what;
    httplib::Result r;
    int status;
    std::string reason;
  };
  std::vector<Case> cases;
  cases.push_back({"malformed JSON", c.Post("/v1/feedback", auth(), "{not json", "application/json"), 400,
                   "malformed JSON"});
  cases.push_back({"wrong type",
                   c.Post("/v1/feedback", auth(), json{{"user", uid}, {"item", iid}, {"type", 5}}.dump(),
                          "application/json"),
                   400, "wrong type"});
  cases.push_back({"unknown type",
                   c.Post("/v1/feedback", auth(), json{{"user", uid}, {"item", iid}, {"type", "love"}}.dump(),
                          "application/json"),
                   400, "not one of"});
  cases.push_back(
      {"missing field",
       c.Post("/v1/feedback", auth(), json{{"user", uid}, {"type", "like"}}.dump(), "application/json"), 400,
       "missing field \"item\""});
  cases.push_back({"unknown item",
                   c.Post("/v1/feedback", auth(),
                          json{{"user", uid}, {"item", "nope"}, {"type", "like"}}.dump(), "application/json"),
                   404, "unknown item"});
  cases.push_back({"unknown user", c.Get("/v1/recommend?user=nope"), 404, "unknown user"});
  cases.push_back(
      {"k not a number", c.Get(("/v1/recommend?user=" + uid + "&k=abc").c_str()), 400, "not a whole number"});
  cases.push_back(
      {"k too large", c.Get(("/v1/recommend?user=" + uid + "&k=100000").c_str()), 400, "between"});
  cases.push_back({"diversity out of range", c.Get(("/v1/recommend?user=" + uid + "&diversity=2").c_str()),
                   400, "diversity"});
  cases.push_back({"unknown domain", c.Get(("/v1/recommend?user=" + uid + "&domain=cars").c_str()), 400,
                   "unknown domain"});
  cases.push_back({"huge body", c.Post("/v1/feedback", auth(), std::string(100000, 'x'), "application/json"),
                   413, "too large"});
  cases.push_back({"no route", c.Get("/v2/nothing"), 404, "no route"});
  cases.push_back({"empty body", c.Post("/v1/items", auth(), "", "application/json"), 400, "JSON body"});
  cases.push_back(
      {"item without text",
       c.Post("/v1/items", auth(), json{{"item", "x1"}, {"domain", "films"}}.dump(), "application/json"), 400,
       "text"});
  cases.push_back({"history of unknown items",
                   c.Post("/v1/recommend", json{{"history", {"zz"}}}.dump(), "application/json"), 404,
                   "unknown item"});
  for (auto& k : cases) {
    ASSERT_TRUE(k.r) << k.what << ": no response";
    EXPECT_EQ(k.r->status, k.status) << k.what << ": " << k.r->body;
    const json j = body(k.r);
    ASSERT_TRUE(j.contains("error")) << k.what;
    EXPECT_NE(j["error"].get<std::string>().find(k.reason), std::string::npos)
        << k.what << ": " << j["error"];
  }
  // A batch with one bad event stores none of it.
  const json batch = json::array({{{"user", uid}, {"item", iid}, {"type", "like"}},
                                  {{"user", uid}, {"item", "nope"}, {"type", "like"}}});
  EXPECT_EQ(c.Post("/v1/feedback", auth(), batch.dump(), "application/json")->status, 404);
  EXPECT_EQ(body(c.Get(("/v1/feedback?user=" + uid).c_str(), auth()))["events"].size(), 0u);

  // A slow client that sends half a request and stalls is dropped after the read timeout, and meanwhile the
  // server answers others.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(s.port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string partial = "GET /health HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(::send(fd, partial.data(), partial.size(), 0), ssize_t(partial.size()));
  EXPECT_EQ(c.Get("/health")->status, 200);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[256];
  const auto t0 = std::chrono::steady_clock::now();
  const ssize_t got = ::recv(fd, buf, sizeof buf, 0);  // the server closes (0) or answers 4xx
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(waited, 4.5) << "the stalled connection was kept open";
  if (got > 0) {
    EXPECT_EQ(std::string(buf, size_t(got)).find("200 OK"), std::string::npos);
  }
  ::close(fd);
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST_F(ServeTest, RestartReplaysTheLogAndServesTheSameLists) {
  const std::string log = db("replay");
  std::vector<json> lists;
  const std::vector<std::string> users{ds_->users.name(2), ds_->users.name(9), "brand-new-user"};
  {
    Running s(*ds_, options(*model_, log));
    auto c = s.client();
    const auto l = items_of(body(c.Get(("/v1/recommend?user=" + users[0] + "&k=10").c_str())));
    const json evs = json::array({{{"user", users[0]}, {"item", l[0]}, {"type", "like"}},
                                  {{"user", users[0]}, {"item", l[1]}, {"type", "dislike"}},
                                  {{"user", users[1]}, {"item", l[2]}, {"type", "purchase"}},
                                  {{"user", users[2]}, {"item", l[3]}, {"type", "click"}}});
    ASSERT_EQ(c.Post("/v1/feedback", auth(), evs.dump(), "application/json")->status, 202);
    ASSERT_EQ(c.Post("/v1/items", auth(),
                     json{{"item", "n1"}, {"domain", "books"}, {"title", "Robots in the kitchen"}}.dump(),
                     "application/json")
                  ->status,
              201);
    ASSERT_EQ(c.Delete(("/v1/items/" + l[4]).c_str(), auth())->status, 200);
    for (auto& u : users)
      lists.push_back(body(c.Get(("/v1/recommend?user=" + u + "&k=15&explain=1").c_str())));
  }
  Running s(*ds_, options(*model_, log));
  auto c = s.client();
  for (size_t k = 0; k < users.size(); ++k)
    EXPECT_EQ(body(c.Get(("/v1/recommend?user=" + users[k] + "&k=15&explain=1").c_str())), lists[k])
        << users[k];
  EXPECT_EQ(c.Get("/v1/similar?item=n1")->status, 200);
}

TEST_F(ServeTest, ReloadSwapsTheModelReplaysTheLogAndKeepsTheOldModelWhenTheLoadFails) {
  const std::string dir = *dir_ + "/reload", log = db("reload");
  const std::string md = train_model(*ds_, dir, "ials:factors=16");
  ServiceOptions so = options(md, log);
  so.cache_entries = 100;
  Running s(*ds_, so);
  auto c = s.client();
  auto metric = [&](const std::string& name) {
    const std::string m = c.Get("/metrics")->body;
    const size_t at = m.find("\n" + name + " ");
    EXPECT_NE(at, std::string::npos) << name;
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + name.size() + 2));
  };
  const std::string a = ds_->users.name(3), b = ds_->users.name(8);
  const std::string qa = "/v1/recommend?user=" + a + "&k=10", qb = "/v1/recommend?user=" + b + "&k=10";
  const auto la = items_of(body(c.Get(qa.c_str())));
  c.Get(qa.c_str());
  EXPECT_EQ(metric("xdrec_rec_cache_entries"), 1);
  const std::string v1 = body(c.Get("/health"))["model_version"];
  // Feedback before the reload must be in the new model's state.
  const json ev = {{"user", b}, {"item", la[0]}, {"type", "purchase"}};
  ASSERT_EQ(c.Post("/v1/feedback", auth(), ev.dump(), "application/json")->status, 202);

  // A new model in the directory; the reload needs the token.
  train_model(*ds_, dir, "ials:factors=8");
  EXPECT_EQ(c.Post("/admin/reload", "", "application/json")->status, 401);
  // Requests keep being answered while the reload runs.
  std::atomic<bool> done{false};
  std::atomic<int> answered{0}, failed{0};
  std::thread reader([&] {
    auto rc = s.client();
    while (!done) {
      auto r = rc.Get(qa.c_str());
      (r && r->status == 200 ? answered : failed)++;
    }
  });
  auto r = c.Post("/admin/reload", auth(), "", "application/json");
  done = true;
  reader.join();
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(answered.load(), 0);
  const json rj = json::parse(r->body);
  EXPECT_NE(rj["model"].get<std::string>().find("factors=8"), std::string::npos) << rj;
  EXPECT_EQ(rj["reloads"], 1);
  EXPECT_EQ(rj["events_replayed"], 1);
  const json h = body(c.Get("/health"));
  EXPECT_NE(h["model_version"], v1);
  EXPECT_EQ(h["reloads"], 1);
  EXPECT_EQ(metric("xdrec_model_reloads_total"), 1);
  // The cache started empty with the new model (the reader's requests after the swap put back user a's).
  EXPECT_LE(metric("xdrec_rec_cache_entries"), 1);
  EXPECT_NE(c.Get("/metrics")->body.find("version=\"" + h["model_version"].get<std::string>() + "\""),
            std::string::npos);
  // The lists are the new model's with the logged event applied: those of a fresh start on the same log
  // (none from the old model's cache).
  const auto lb = items_of(body(c.Get(qb.c_str())));
  {
    Service fresh(*ds_, options(md, log));
    RecommendQuery q;
    q.user = b;
    q.k = 10;
    EXPECT_EQ(lb, items_of(fresh.recommend(q)));
    q.user = a;
    EXPECT_EQ(items_of(body(c.Get(qa.c_str()))), items_of(fresh.recommend(q)));
    EXPECT_NE(items_of(fresh.recommend(q)), la);
    EXPECT_EQ(std::count(lb.begin(), lb.end(), la[0]), 0);  // the purchase is seen
  }

  // A broken model file: the reload fails with the reason, the previous model keeps serving.
  const auto before = items_of(body(c.Get(qa.c_str())));
  {
    std::ofstream f(md + "/model.safetensors", std::ios::binary | std::ios::trunc);
    f << "not a tensor file";
  }
  r = c.Post("/admin/reload", auth(), "", "application/json");
  ASSERT_EQ(r->status, 500);
  EXPECT_NE(json::parse(r->body)["error"].get<std::string>().find("still serving the previous model"),
            std::string::npos)
      << r->body;
  EXPECT_EQ(items_of(body(c.Get(qa.c_str()))), before);
  EXPECT_EQ(metric("xdrec_model_reload_failures_total"), 1);
  EXPECT_EQ(metric("xdrec_model_reloads_total"), 1);
  EXPECT_EQ(body(c.Get("/health"))["reloads"], 1);
}

TEST_F(ServeTest, HnswRetrievalAgreesWithExact) {
  ServiceOptions so = options(*model_, db("hnsw"), "none");
  so.retrieval = "hnsw";
  Service svc(*ds_, so);
  EXPECT_EQ(svc.retrieval(), "hnsw");
  EXPECT_GE(svc.measure_recall(200, 10), 0.95);
  RecommendQuery q;
  q.user = ds_->users.name(8);
  q.k = 10;
  const json before = svc.recommend(q);
  EXPECT_EQ(before["items"].size(), 10u);
  // A deleted item leaves the index: the next list has the other nine and one more.
  const std::string gone = before["items"][0]["item"];
  svc.delete_item(gone);
  const json after = svc.recommend(q);
  ASSERT_EQ(after["items"].size(), 10u);
  for (auto& x : after["items"]) EXPECT_NE(x["item"], gone);
  EXPECT_EQ(after["items"][0]["item"], before["items"][1]["item"]);
  EXPECT_GE(svc.measure_recall(200, 10), 0.95);
  ServiceOptions bad = options(*model_, db("hnsw2"), "none");
  bad.retrieval = "fast";
  EXPECT_TRUE(testing_util::throws_error([&] { Service x(*ds_, bad); }, {"--retrieval"}));
}

// Retrieval through item codes (sq8, product quantisation with exact re-ranking): lists agree with exact
// retrieval, a deleted item is never returned, the domain filter holds, and bad specs are errors.
TEST_F(ServeTest, CodedRetrievalAgreesWithExact) {
  for (const std::string spec : {"sq8", "pq:m=4,bits=6,rerank=40"}) {
    SCOPED_TRACE(spec);
    ServiceOptions so = options(*model_, db("codes" + std::to_string(spec.size())), "none");
    so.retrieval = spec;
    Service svc(*ds_, so);
    EXPECT_EQ(svc.retrieval(), spec.substr(0, spec.find(':')));
    EXPECT_GE(svc.measure_recall(200, 10), 0.95);
    RecommendQuery q;
    q.user = ds_->users.name(8);
    q.k = 10;
    const json before = svc.recommend(q);
    ASSERT_EQ(before["items"].size(), 10u);
    const std::string gone = before["items"][0]["item"];
    svc.delete_item(gone);
    const json after = svc.recommend(q);
    ASSERT_EQ(after["items"].size(), 10u);
    for (auto& x : after["items"]) EXPECT_NE(x["item"], gone);
    q.domain = ds_->domains.name(1);
    const json in_domain = svc.recommend(q);
    for (auto& x : in_domain["items"]) EXPECT_EQ(x["domain"], q.domain);
  }
  for (const std::string bad : {"pq:m=17", "pq:bits=9", "sq8:m=2", "pq8"}) {
    ServiceOptions so = options(*model_, db("codes_bad"), "none");
    so.retrieval = bad;
    EXPECT_TRUE(testing_util::throws_error([&] { Service x(*ds_, so); }, {})) << bad;
  }
}

TEST_F(ServeTest, RefusesAPublicAddressWithoutAToken) {
  Service svc(*ds_, options(*model_, db("public"), "none"));
  HttpOptions ho;
  ho.host = "0.0.0.0";
  ho.port = 0;
  ho.access_log = "-";
  HttpServer h(svc, ho);
  EXPECT_TRUE(testing_util::throws_error([&] { h.bind(); }, {"without a token"}));
}

TEST_F(ServeTest, TrainWithEventsFoldsTheLogIntoTheData) {
  const std::string log = db("fold");
  {
    Service svc(*ds_, options(*model_, log));
    const Feedback f[2] = {{"someone-new", ds_->items.name(3), "like", 0},
                           {ds_->users.name(0), ds_->items.name(4), "dislike", 0}};
    svc.add_feedback(f);
    svc.add_item({"fold-item", "kitchen", "A cast-iron pan", "", {}});
  }
  Dataset d = *ds_;
  EXPECT_EQ(fold_events(d, log), 2u);  // the like and the item; a dislike is no interaction
  EXPECT_EQ(d.n_users(), ds_->n_users() + 1);
  EXPECT_EQ(d.n_items(), ds_->n_items() + 1);
  EXPECT_EQ(d.interactions.size(), ds_->interactions.size() + 1);
  // A model trained on the folded data is served over the original data and the same log.
  const std::string dir = temp_dir("fold");
  const std::string md = train_model(d, dir);
  Service svc(*ds_, options(md, log));
  RecommendQuery q;
  q.user = "someone-new";
  EXPECT_EQ(svc.recommend(q)["items"].size(), 10u);
  fs::remove_all(dir);
}

// kill -9 in the middle of a burst of feedback: every event the server acknowledged (202) is there after a
// restart, and the restarted server excludes those items.
TEST(ServeProcess, AcknowledgedEventsSurviveKill9) {
  const char* cli = std::getenv("XDREC_CLI");
  if (!cli) GTEST_SKIP() << "XDREC_CLI not set (run through ctest)";
  const Dataset ds = small_data();
  const std::string dir = temp_dir("kill9");
  const std::string md = train_model(ds, dir);
  // The binary loads the same data by its spec: make_synthetic with these options is what
  // "synthetic:users=300,items=80,seed=7" gives (the server checks the model's data fingerprint).
  std::ofstream(dir + "/token") << kToken << "\n";
  // Pick a free port.
  int port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    ::close(fd);
  }
  auto start = [&] {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const std::string log = dir + "/serve.log";
      freopen(log.c_str(), "a", stderr);
      const std::string p = std::to_string(port);
      execl(cli, cli, "serve", "--model", md.c_str(), "--data", "synthetic:users=300,items=80,seed=7",
            "--port", p.c_str(), "--token-file", (dir + "/token").c_str(), "--db",
            (dir + "/events.sqlite").c_str(), "--text", "none", "--threads", "2", "--access-log", "-", "-q",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 300; ++i) {
      if (auto r = c.Get("/health"); r && r->status == 200) return pid;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return pid_t(-1);
  };
  pid_t pid = start();
  ASSERT_GT(pid, 0) << "server did not start: " << dir << "/serve.log";
  // Two writers send one event per request as fast as they can; the server is killed after 150 acks.
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> acked;  // (user, item)
  std::atomic<bool> stop{false};
  auto writer = [&](int w) {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(5, 0);
    for (uint32_t n = 0; !stop; ++n) {
      const std::string user = "burst-" + std::to_string(w) + "-" + std::to_string(n % 7);
      const std::string item = ds.items.name((n * 13 + uint32_t(w) * 101) % ds.n_items());
      auto r = c.Post("/v1/feedback", auth(), json{{"user", user}, {"item", item}, {"type", "click"}}.dump(),
                      "application/json");
      if (!r) break;  // the server is gone
      if (r->status == 202) {
        std::lock_guard l(mu);
        acked.emplace_back(user, item);
      }
    }
  };
  std::thread w1(writer, 1), w2(writer, 2);
  for (int i = 0; i < 600; ++i) {
    {
      std::lock_guard l(mu);
      if (acked.size() >= 150) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  stop = true;
  w1.join();
  w2.join();
  ASSERT_GE(acked.size(), 20u) << "too few events acknowledged before the kill";
  pid = start();
  ASSERT_GT(pid, 0) << "server did not restart after kill -9";
  httplib::Client c("127.0.0.1", port);
  std::map<std::string, std::multiset<std::string>> stored;
  for (auto& [user, item] : acked) {
    if (stored.count(user)) continue;
    auto r = c.Get(("/v1/feedback?user=" + user).c_str(), auth());
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : std::string("no response"));
    const json ev = json::parse(r->body);
    for (auto& e : ev["events"]) stored[user].insert(e["item"].get<std::string>());
  }
  size_t lost = 0;
  for (auto& [user, item] : acked) lost += stored[user].count(item) == 0;
  EXPECT_EQ(lost, 0u) << "of " << acked.size() << " acknowledged events; first " << acked[0].first << " "
                      << acked[0].second << " stored " << stored[acked[0].first].size();
  // The restarted server does not offer them again.
  for (auto& [user, item] : acked) {
    const auto l = items_of(json::parse(c.Get(("/v1/recommend?k=50&user=" + user).c_str())->body));
    EXPECT_EQ(std::count(l.begin(), l.end(), item), 0);
    break;
  }
  ::kill(pid, SIGTERM);
  int st = 0;
  ::waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "SIGTERM did not stop the server gracefully";
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);
}

// A text model: profiles and new items go through the model itself (fold_in_profile, add_item), also with
// HNSW retrieval (the new item enters the index), and explanations name the most similar history texts.
TEST(ServeTextModel, ProfilesAndNewItemsGoThroughTheModel) {
  const Dataset ds = small_data();
  const std::string dir = temp_dir("text");
  auto enc = create_encoder("tfidf");
  EmbedOptions eo;
  eo.use_cache = false;
  eo.threads = 1;
  const TextVectors tv = embed_dataset(ds, *enc, eo);
  FitRequest req;
  req.spec = "hybrid:factors=16,epochs=5";
  req.text = &tv;
  req.threads = 1;
  Fitted f = fit_model(ds, ds.user_item_matrix(), req);
  ASSERT_TRUE(f.model->uses_text());
  const std::string md = dir + "/model";
  save_model(*f.model, md, ds.fingerprint());
  write_text_config(md, tv, kDefaultItemTemplate, false, "");
  ServiceOptions so = options(md, dir + "/events.sqlite", "none");
  so.retrieval = "hnsw";
  Running s(ds, so);
  auto c = s.client();
  EXPECT_NE(body(c.Get("/health"))["encoder"].get<std::string>().find("tfidf"), std::string::npos);
  auto r = c.Post("/v1/recommend",
                  json{{"profile", "robots and neural circuits"}, {"domain", "films"}, {"k", 5}}.dump(),
                  "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  const json pj = json::parse(r->body);
  ASSERT_EQ(pj["items"].size(), 5u);
  for (auto& x : pj["items"]) EXPECT_EQ(x["domain"], "films");
  r = c.Post("/v1/items", auth(),
             json{{"item", "tm-1"}, {"domain", "films"}, {"title", "The Neural Robot"}}.dump(),
             "application/json");
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(body(r)["placed_by"], "model");
  EXPECT_EQ(c.Get("/v1/similar?item=tm-1&k=3")->status, 200);
  bool listed = false;
  for (uint32_t u = 0; u < 100 && !listed; ++u) {
    const auto l =
        items_of(body(c.Get(("/v1/recommend?k=30&domain=films&user=" + ds.users.name(u)).c_str())));
    listed = std::count(l.begin(), l.end(), std::string("tm-1")) > 0;
  }
  EXPECT_TRUE(listed) << "the new item never reaches a list through the HNSW index";
  const json e = body(c.Get(("/v1/recommend?k=3&explain=1&user=" + ds.users.name(0)).c_str()));
  EXPECT_EQ(e["items"][0]["explanation"]["method"], "text similarity");
  fs::remove_all(dir);
}
