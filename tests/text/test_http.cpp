// http encoder against a real local HTTP server (POSIX sockets on 127.0.0.1, an ephemeral port, one thread)
// that serves embeddings, fails then succeeds, hangs, or answers garbage.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "xdrec/encoder.h"

namespace xdrec {
namespace {

struct HttpRequest {
  std::string method, path, headers, body;
};
struct HttpResponse {
  int status = 200;
  std::string body;
  bool hang = false;  // accept the request and never answer
  std::string extra_headers;
};

// A minimal HTTP/1.1 server: one connection at a time, "Connection: close" after each response.
class TestServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  explicit TestServer(Handler h) : handler_(std::move(h)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw Error("socket failed");
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 16) != 0)
      throw Error("bind/listen failed");
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1/embeddings"; }
  int requests() const { return requests_.load(); }
  HttpRequest last() {
    std::lock_guard<std::mutex> l(mu_);
    return last_;
  }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      serve(c);
      ::close(c);
    }
  }
  // Reads until the headers and Content-Length bytes of body have arrived (or the peer stops).
  bool read_request(int c, HttpRequest& r) {
    std::string buf;
    char tmp[8192];
    size_t header_end = std::string::npos, need = 0;
    while (!stop_) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf.append(tmp, size_t(n));
      if (header_end == std::string::npos) {
        header_end = buf.find("\r\n\r\n");
        if (header_end == std::string::npos) continue;
        r.headers = buf.substr(0, header_end);
        std::string lower = r.headers;
        for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
        const size_t cl = lower.find("content-length:");
        if (cl != std::string::npos) need = std::stoul(lower.substr(cl + 15));
        const size_t sp1 = r.headers.find(' '), sp2 = r.headers.find(' ', sp1 + 1);
        r.method = r.headers.substr(0, sp1);
        r.path = r.headers.substr(sp1 + 1, sp2 - sp1 - 1);
      }
      if (buf.size() >= header_end + 4 + need) {
        r.body = buf.substr(header_end + 4, need);
        return true;
      }
    }
    return false;
  }
  void serve(int c) {
    HttpRequest req;
    if (!read_request(c, req)) return;
    ++requests_;
    {
      std::lock_guard<std::mutex> l(mu_);
      last_ = req;
    }
    const HttpResponse res = handler_(req);
    if (res.hang) {
      while (!stop_) {  // until the client gives up (closes) or the server stops
        pollfd p{c, POLLIN, 0};
        if (::poll(&p, 1, 20) > 0) {
          char tmp[256];
          if (::recv(c, tmp, sizeof tmp, 0) <= 0) return;
        }
      }
      return;
    }
    std::string out = "HTTP/1.1 " + std::to_string(res.status) + " X\r\nContent-Type: application/json\r\n" +
                      "Content-Length: " + std::to_string(res.body.size()) + "\r\nConnection: close\r\n" +
                      res.extra_headers + "\r\n" + res.body;
    size_t off = 0;
    while (off < out.size()) {
      const ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += size_t(n);
    }
  }

  Handler handler_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  HttpRequest last_;
  std::thread thread_;
};

// The server's embedding of a text: (byte length, number of 'a', 1).
std::vector<float> fake_embedding(const std::string& t) {
  return {float(t.size()), float(std::count(t.begin(), t.end(), 'a')), 1.0f};
}

// An OpenAI-style response, data listed in reverse order (the client must sort by index).
HttpResponse embeddings(const HttpRequest& req) {
  const auto j = nlohmann::json::parse(req.body);
  const auto& input = j.at("input");
  nlohmann::json data = nlohmann::json::array();
  for (size_t i = input.size(); i-- > 0;)
    data.push_back(
        {{"object", "embedding"}, {"index", i}, {"embedding", fake_embedding(input[i].get<std::string>())}});
  nlohmann::json res = {{"object", "list"}, {"data", data}, {"model", j.value("model", "")}};
  return {200, res.dump(), false, ""};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const std::vector<std::string> kTexts = {"banana", "", "a cat", "Crème brûlée ☕", "aaaa", "zzz", "bab"};

TEST(Http, EncodesInBatchesInInputOrder) {
  TestServer server(embeddings);
  auto e = create_encoder("http:" + server.url() + ",model=tiny,batch=3");
  EXPECT_EQ(e->name(), "http");
  EXPECT_EQ(e->dim(), 0u);  // learned on the first call
  Matrix m = e->encode(kTexts, 1);
  EXPECT_EQ(server.requests(), 3);  // 7 texts, 3 per request
  EXPECT_EQ(e->dim(), 3u);
  ASSERT_EQ(m.rows, kTexts.size());
  ASSERT_EQ(m.cols, 3u);
  for (size_t i = 0; i < kTexts.size(); ++i)
    EXPECT_EQ(std::vector<float>(m.row(i), m.row(i) + 3), fake_embedding(kTexts[i])) << i;
  const HttpRequest last = server.last();
  EXPECT_EQ(last.method, "POST");
  EXPECT_EQ(last.path, "/v1/embeddings");
  const auto body = nlohmann::json::parse(last.body);
  EXPECT_EQ(body.at("model"), "tiny");
  EXPECT_EQ(body.at("input").size(), 1u);  // the last batch holds the 7th text
  EXPECT_EQ(body.at("input")[0], "bab");
  // The same result with requests in parallel.
  EXPECT_EQ(e->encode(kTexts, 3).data, m.data);
  EXPECT_EQ(e->encode(std::vector<std::string>{}, 2).rows, 0u);
}

TEST(Http, SendsTheApiKeyFromTheNamedVariable) {
  TestServer server(embeddings);
  setenv("XDREC_TEST_HTTP_KEY", "s3cret", 1);
  auto e = create_encoder("http:" + server.url() + ",api_key_env=XDREC_TEST_HTTP_KEY");
  e->encode(std::vector<std::string>{"x"}, 1);
  EXPECT_NE(server.last().headers.find("Authorization: Bearer s3cret"), std::string::npos)
      << server.last().headers;
  EXPECT_EQ(nlohmann::json::parse(server.last().body).count("model"), 0u);  // no model given: none sent
  unsetenv("XDREC_TEST_HTTP_KEY");
  const std::string err =
      error_of([&] { create_encoder("http:" + server.url() + ",api_key_env=XDREC_TEST_HTTP_KEY"); });
  EXPECT_NE(err.find("XDREC_TEST_HTTP_KEY"), std::string::npos) << err;
}

TEST(Http, RetriesServerErrorsAndRateLimits) {
  std::atomic<int> calls{0};
  TestServer server([&](const HttpRequest& r) {
    const int c = calls++;
    if (c == 0) return HttpResponse{500, "{\"error\":\"overloaded\"}", false, ""};
    if (c == 1) return HttpResponse{429, "slow down", false, ""};
    return embeddings(r);
  });
  auto e = create_encoder("http:" + server.url() + ",retries=3,backoff_ms=5");
  Matrix m = e->encode(std::vector<std::string>{"abc"}, 1);
  EXPECT_EQ(server.requests(), 3);
  EXPECT_EQ(std::vector<float>(m.row(0), m.row(0) + 3), fake_embedding("abc"));

  calls = 0;
  auto few = create_encoder("http:" + server.url() + ",retries=1,backoff_ms=5");
  const std::string err = error_of([&] { few->encode(std::vector<std::string>{"abc"}, 1); });
  EXPECT_NE(err.find("after 2 attempts"), std::string::npos) << err;
  EXPECT_NE(err.find("HTTP 429"), std::string::npos) << err;
  EXPECT_NE(err.find("slow down"), std::string::npos) << err;
}

TEST(Http, ClientErrorsAreNotRetried) {
  TestServer server([](const HttpRequest&) {
    return HttpResponse{400, "{\"error\":{\"message\":\"input cannot be empty\"}}", false, ""};
  });
  auto e = create_encoder("http:" + server.url() + ",retries=3,backoff_ms=5");
  const std::string err = error_of([&] { e->encode(std::vector<std::string>{"x"}, 1); });
  EXPECT_EQ(server.requests(), 1);
  EXPECT_NE(err.find("HTTP 400"), std::string::npos) << err;
  EXPECT_NE(err.find("input cannot be empty"), std::string::npos) << err;
}

TEST(Http, TimesOutOnAServerThatHangs) {
  TestServer server([](const HttpRequest&) { return HttpResponse{200, "", true, ""}; });
  auto e = create_encoder("http:" + server.url() + ",timeout_ms=150,retries=1,backoff_ms=5");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = error_of([&] { e->encode(std::vector<std::string>{"x"}, 1); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(err.find("imeout"), std::string::npos) << err;  // "Timeout was reached"
  EXPECT_NE(err.find("after 2 attempts"), std::string::npos) << err;
  EXPECT_LT(s, 3.0);
  EXPECT_EQ(server.requests(), 2);
}

TEST(Http, ConnectionRefusedIsRetriedThenReported) {
  // A socket bound to an ephemeral port but not listening: connections to it are refused, and no other
  // process can take the port while it is held.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  auto e = create_encoder("http:http://127.0.0.1:" + std::to_string(port) +
                          "/v1/embeddings,retries=2,backoff_ms=5");
  const std::string err = error_of([&] { e->encode(std::vector<std::string>{"x"}, 1); });
  EXPECT_NE(err.find("after 3 attempts"), std::string::npos) << err;
  EXPECT_NE(err.find("onnect"), std::string::npos) << err;
  ::close(fd);
}

TEST(Http, MalformedResponsesGiveClearErrors) {
  std::string reply;
  TestServer server([&](const HttpRequest&) { return HttpResponse{200, reply, false, ""}; });
  auto enc = [&] { return create_encoder("http:" + server.url() + ",retries=0"); };
  const std::vector<std::string> two = {"a", "b"};
  auto err_for = [&](const std::string& body) {
    reply = body;
    return error_of([&] { enc()->encode(two, 1); });
  };
  EXPECT_NE(err_for("<html>oops</html>").find("not valid JSON"), std::string::npos);
  EXPECT_NE(err_for("{\"object\":\"list\"}").find("no 'data' array"), std::string::npos);
  EXPECT_NE(err_for("{\"data\":[{\"index\":0,\"embedding\":[1,2]}]}").find("1 embeddings for 2 inputs"),
            std::string::npos);
  EXPECT_NE(err_for("{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"index\":1,\"embedding\":[1,2,3]}]}")
                .find("inconsistent dimensions"),
            std::string::npos);
  EXPECT_NE(err_for("{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"index\":0,\"embedding\":[1,2]}]}")
                .find("repeats index 0"),
            std::string::npos);
  EXPECT_NE(err_for("{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"index\":5,\"embedding\":[1,2]}]}")
                .find("index 5"),
            std::string::npos);
  EXPECT_NE(err_for("{\"data\":[{\"index\":0,\"embedding\":[1,\"x\"]},{\"index\":1,\"embedding\":[1,2]}]}")
                .find("non-numeric"),
            std::string::npos);
  EXPECT_NE(err_for("{\"error\":{\"message\":\"model not loaded\"}}").find("model not loaded"),
            std::string::npos);
  // Without index fields the order of the data array is used.
  reply = "{\"data\":[{\"embedding\":[1,2]},{\"embedding\":[3,4]}]}";
  Matrix m = enc()->encode(two, 1);
  EXPECT_EQ(m.data, (std::vector<float>{1, 2, 3, 4}));
  // A declared dimension that the server does not match.
  const std::string err =
      error_of([&] { create_encoder("http:" + server.url() + ",dim=3")->encode(two, 1); });
  EXPECT_NE(err.find("expected 3"), std::string::npos) << err;
}

TEST(Http, SpecParsingAndValidation) {
  auto e = create_encoder("http:http://127.0.0.1:9/v1/embeddings,model=m,batch=8");
  EXPECT_EQ(e->spec().rfind("http:http://127.0.0.1:9/v1/embeddings,", 0), 0u) << e->spec();
  EXPECT_EQ(create_encoder(e->spec())->spec(), e->spec());
  EXPECT_EQ(create_encoder(e->spec())->fingerprint(), e->fingerprint());
  EXPECT_NE(create_encoder("http:http://127.0.0.1:9/v1/embeddings,model=other")->fingerprint(),
            e->fingerprint());
  EXPECT_EQ(create_encoder("http:url=http://127.0.0.1:9/v1/embeddings,model=m")->fingerprint(),
            e->fingerprint());
  EXPECT_THROW(create_encoder("http"), Error);
  EXPECT_THROW(create_encoder("http:ftp://x/y"), Error);
  EXPECT_THROW(create_encoder("http:http://x/v1/embeddings,batch=0"), Error);
  EXPECT_THROW(create_encoder("http:http://x/v1/embeddings,colour=red"), Error);
  const std::string err = error_of([&] {
    create_encoder("http:http://127.0.0.1:9/v1/embeddings")
        ->encode(std::vector<std::string>{"ok", "bad \xff"}, 1);
  });
  EXPECT_NE(err.find("text 1 is not valid UTF-8"), std::string::npos) << err;
}

}  // namespace
}  // namespace xdrec
