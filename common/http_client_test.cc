#include "common/http_client.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "common/http_server.h"

namespace kvmesh::http {
namespace {

using namespace std::chrono_literals;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace fs = std::filesystem;

std::string Url(const HttpServer& s, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(s.port()) + path;
}

TEST(SseParserTest, SplitsEventsAcrossArbitraryPieces) {
  const std::string stream =
      ": keep-alive comment\n\n"
      "data: one\n\n"
      "event: usage\r\nid: 9\r\ndata: a\r\ndata:b\r\n\r\n"
      "data: {\"x\": 1}\n\n"
      "data: unterminated";
  for (std::size_t step = 1; step <= stream.size(); ++step) {
    SseParser p;
    std::vector<SseEvent> got;
    for (std::size_t i = 0; i < stream.size(); i += step) {
      ASSERT_TRUE(p.Feed(std::string_view(stream).substr(i, step), [&](const SseEvent& e) {
        got.push_back(e);
        return true;
      }));
    }
    ASSERT_EQ(got.size(), 3u) << "step " << step;
    EXPECT_EQ(got[0].data, "one");
    EXPECT_EQ(got[1].event, "usage");
    EXPECT_EQ(got[1].id, "9");
    EXPECT_EQ(got[1].data, "a\nb");
    EXPECT_EQ(got[2].data, "{\"x\": 1}");
  }
  SseParser p;
  int n = 0;
  EXPECT_FALSE(p.Feed("data: 1\n\ndata: 2\n\n", [&](const SseEvent&) { return ++n < 1; }));
  EXPECT_EQ(n, 1);
}

TEST(HttpClientTest, BadUrlsAreInvalidArgument) {
  HttpClient c;
  EXPECT_EQ(c.Get("ftp://x/").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Get("http:///path").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Get("http://h:99999/").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Get("http://h:x/").status().code(), StatusCode::kInvalidArgument);
}

TEST(HttpClientTest, ConnectionRefusedNamesHostPort) {
  uint16_t port;
  {
    HttpServer s({});
    ASSERT_TRUE(s.Start().ok());
    port = s.port();
  }  // stopped: nothing listens on `port` now
  HttpClient c;
  auto r = c.Get("http://127.0.0.1:" + std::to_string(port) + "/");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("connect to 127.0.0.1:" + std::to_string(port) + " failed"),
            std::string::npos)
      << r.status().ToString();
}

TEST(HttpClientTest, ReadTimeoutIsDeadlineExceeded) {
  std::promise<void> release;
  std::shared_future<void> release_f = release.get_future().share();
  HttpServer server({});
  server.Route("GET", "/hang", [&](const HttpRequest&) {
    release_f.wait();
    return HttpResponse{};
  });
  ASSERT_TRUE(server.Start().ok());
  HttpClientOptions o;
  o.read_timeout = 200ms;
  HttpClient c(o);
  auto r = c.Get(Url(server, "/hang"));
  release.set_value();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_NE(r.status().message().find("timed out"), std::string::npos);
  EXPECT_NE(r.status().message().find("127.0.0.1:" + std::to_string(server.port())),
            std::string::npos);
}

TEST(HttpClientTest, ResponseBodyLimit) {
  HttpServer server({});
  server.Route("GET", "/big", [](const HttpRequest&) {
    return HttpResponse{200, "text/plain", {}, std::string(10000, 'b')};
  });
  server.Route("GET", "/small", [](const HttpRequest&) {
    return HttpResponse{200, "text/plain", {}, "s"};
  });
  server.RouteStream("GET", "/chunked", StreamWriter::Mode::kChunked,
                     [](const HttpRequest&, std::shared_ptr<StreamWriter> w) {
                       for (int i = 0; i < 5; ++i) w->Send(std::string(400, 'c'));
                       w->Close();
                     });
  ASSERT_TRUE(server.Start().ok());
  HttpClientOptions o;
  o.max_response_body_bytes = 1000;
  HttpClient c(o);
  auto r = c.Get(Url(server, "/big"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_NE(r.status().message().find("1000"), std::string::npos);
  auto chunked = c.Get(Url(server, "/chunked"));
  EXPECT_EQ(chunked.status().code(), StatusCode::kResourceExhausted) << chunked.status().ToString();
  HttpClientOptions roomy;
  roomy.max_response_body_bytes = 2000;
  auto fits = HttpClient(roomy).Get(Url(server, "/chunked"));
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  EXPECT_EQ(fits->body, std::string(2000, 'c'));
  auto s = c.Get(Url(server, "/small"));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->body, "s");
}

TEST(HttpClientTest, NonSuccessStreamIsReadWhole) {
  HttpServer server({});
  ASSERT_TRUE(server.Start().ok());
  HttpClient c;
  ClientRequest req;
  req.url = Url(server, "/missing");
  bool called = false;
  auto r = c.StreamSse(req, [&](const SseEvent&) { return called = true; });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 404);
  EXPECT_FALSE(called);
  EXPECT_NE(r->body.find("not_found_error"), std::string::npos);
}

// Abort() from another thread cancels the call in progress (stream and plain), the server sees
// the disconnect, and the same client works again afterwards.
TEST(HttpClientTest, AbortCancelsTheCallInProgress) {
  std::atomic<int> disconnects{0};
  std::vector<std::shared_ptr<Responder>> parked;
  std::vector<std::shared_ptr<StreamWriter>> parked_writers;
  std::mutex parked_mu;
  HttpServer server({});
  server.RouteAsync("GET", "/stream", [&](const HttpRequest&, std::shared_ptr<Responder> r) {
    auto w = r->StartStream(StreamWriter::Mode::kSse);
    w->SetOnDisconnect([&] { disconnects.fetch_add(1); });
    w->Send("first");  // then nothing more: the client has to abort
    std::lock_guard<std::mutex> lock(parked_mu);
    parked_writers.push_back(std::move(w));
  });
  server.RouteAsync("GET", "/hang", [&](const HttpRequest&, std::shared_ptr<Responder> r) {
    r->SetOnDisconnect([&] { disconnects.fetch_add(10); });
    std::lock_guard<std::mutex> lock(parked_mu);
    parked.push_back(std::move(r));  // never answered
  });
  server.Route("GET", "/ok", [](const HttpRequest&) { return HttpResponse{200, "text/plain", {}, "ok"}; });
  ASSERT_TRUE(server.Start().ok());

  HttpClientOptions o;
  o.read_timeout = 20s;
  HttpClient c(o);
  c.Abort();  // no call in progress: nothing happens
  std::promise<void> got_first;
  auto started = std::chrono::steady_clock::now();
  std::thread aborter([&] {
    got_first.get_future().wait();
    c.Abort();
  });
  ClientRequest req;
  req.url = Url(server, "/stream");
  int events = 0;
  auto r = c.StreamSse(req, [&](const SseEvent& e) {
    if (++events == 1) {
      EXPECT_EQ(e.data, "first");
      got_first.set_value();
    }
    return true;
  });
  aborter.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().ToString();
  EXPECT_EQ(events, 1);

  std::thread aborter2([&] {
    std::this_thread::sleep_for(100ms);
    c.Abort();
  });
  auto h = c.Get(Url(server, "/hang"));
  aborter2.join();
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kCancelled) << h.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);  // not the read timeout

  auto ok = c.Get(Url(server, "/ok"));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->body, "ok");
  for (int i = 0; i < 200 && disconnects.load() < 11; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(disconnects.load(), 11);  // both the stream and the pending response saw the close
  server.Stop(0ms);
}

// A pooled connection whose server went away is replaced transparently.
TEST(HttpClientTest, StaleKeepAliveConnectionIsReplaced) {
  auto make = [](uint16_t port, std::string body) {
    HttpServerOptions o;
    o.port = port;
    auto s = std::make_unique<HttpServer>(o);
    s->Route("GET", "/", [body](const HttpRequest&) { return HttpResponse{200, "text/plain", {}, body}; });
    return s;
  };
  auto first = make(0, "one");
  ASSERT_TRUE(first->Start().ok());
  const uint16_t port = first->port();
  HttpClient c;
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/";
  auto r1 = c.Get(url);
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  first->Stop(0ms);  // closes the idle keep-alive connection
  first.reset();
  auto second = make(port, "two");
  ASSERT_TRUE(second->Start().ok());
  auto r2 = c.Get(url);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ(r2->body, "two");
  EXPECT_EQ(c.connections_opened(), 2u);
}

// ---- TLS ---------------------------------------------------------------------------------------

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvmesh_tls_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    cert_ = dir_ + "/cert.pem";
    key_ = dir_ + "/key.pem";
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " +
        key_ + " -out " + cert_ + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A one-connection Beast TLS server; answers "tls ok" if the handshake succeeds.
  struct OneShotTlsServer {
    net::io_context ioc;
    net::ssl::context ctx{net::ssl::context::tls_server};
    net::ip::tcp::acceptor acceptor{ioc};
    std::thread thread;
    uint16_t port = 0;

    OneShotTlsServer(const std::string& cert, const std::string& key) {
      ctx.use_certificate_chain_file(cert);
      ctx.use_private_key_file(key, net::ssl::context::pem);
      net::ip::tcp::endpoint ep(net::ip::make_address("127.0.0.1"), 0);
      acceptor.open(ep.protocol());
      acceptor.bind(ep);
      acceptor.listen();
      port = acceptor.local_endpoint().port();
      thread = std::thread([this] {
        beast::error_code ec;
        net::ip::tcp::socket sock(ioc);
        acceptor.accept(sock, ec);
        if (ec) return;
        beast::ssl_stream<net::ip::tcp::socket> s(std::move(sock), ctx);
        s.handshake(net::ssl::stream_base::server, ec);
        if (ec) return;
        beast::flat_buffer buf;
        bhttp::request<bhttp::string_body> req;
        bhttp::read(s, buf, req, ec);
        if (ec) return;
        bhttp::response<bhttp::string_body> res{bhttp::status::ok, 11};
        res.body() = "tls ok " + std::string(req.target());
        res.keep_alive(false);
        res.prepare_payload();
        bhttp::write(s, res, ec);
        s.shutdown(ec);
      });
    }
    ~OneShotTlsServer() { thread.join(); }
  };

  std::string dir_, cert_, key_;
};

TEST_F(TlsTest, VerifiesWithCaFile) {
  OneShotTlsServer server(cert_, key_);
  HttpClientOptions o;
  o.ca_file = cert_;
  HttpClient c(o);
  auto r = c.Get("https://127.0.0.1:" + std::to_string(server.port) + "/secure");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "tls ok /secure");
}

TEST_F(TlsTest, FailsWithoutTrustedCa) {
  OneShotTlsServer server(cert_, key_);
  HttpClient c;  // verify_peer with the system store, which does not hold our self-signed cert
  auto r = c.Get("https://127.0.0.1:" + std::to_string(server.port) + "/secure");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("TLS handshake with 127.0.0.1:" + std::to_string(server.port) +
                                      " failed"),
            std::string::npos)
      << r.status().ToString();
}

TEST_F(TlsTest, VerificationCanBeDisabled) {
  OneShotTlsServer server(cert_, key_);
  HttpClientOptions o;
  o.verify_peer = false;
  HttpClient c(o);
  auto r = c.Get("https://127.0.0.1:" + std::to_string(server.port) + "/x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "tls ok /x");
}

TEST_F(TlsTest, MissingCaFileIsInvalidArgument) {
  HttpClientOptions o;
  o.ca_file = dir_ + "/does-not-exist.pem";
  HttpClient c(o);
  auto r = c.Get("https://127.0.0.1:1/");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
}

}  // namespace
}  // namespace kvmesh::http
