#include "common/http_server.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/http_client.h"

namespace kvmesh::http {
namespace {

using namespace std::chrono_literals;
namespace net = boost::asio;

std::string Url(const HttpServer& s, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(s.port()) + path;
}

// Sends raw bytes on a fresh connection and returns everything the server sends until it closes.
std::string RawExchange(uint16_t port, const std::string& bytes) {
  net::io_context ioc;
  net::ip::tcp::socket sock(ioc);
  boost::system::error_code ec;
  sock.connect({net::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return "connect failed: " + ec.message();
  net::write(sock, net::buffer(bytes), ec);
  sock.shutdown(net::ip::tcp::socket::shutdown_send, ec);
  std::string out;
  char buf[4096];
  for (;;) {
    std::size_t n = sock.read_some(net::buffer(buf), ec);
    out.append(buf, n);
    if (ec) break;
  }
  return out;
}

nlohmann::json ErrorJson(const ClientResponse& r) { return nlohmann::json::parse(r.body)["error"]; }

TEST(HttpServerTest, GetAndPostRoundTrip) {
  HttpServer server({});
  server.Route("GET", "/hello", [](const HttpRequest& r) {
    HttpResponse resp;
    resp.body = "hi " + r.query;
    resp.headers.emplace_back("X-Test", "1");
    return resp;
  });
  server.Route("POST", "/echo", [](const HttpRequest& r) {
    return JsonResponse(201, nlohmann::json{{"body", r.body}, {"auth", r.Header("Authorization")},
                                            {"ct", r.Header("content-type")}}
                                 .dump());
  });
  ASSERT_TRUE(server.Start().ok());
  ASSERT_NE(server.port(), 0);
  HttpClient client;
  auto get = client.Get(Url(server, "/hello?name=x"));
  ASSERT_TRUE(get.ok()) << get.status().ToString();
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, "hi name=x");
  EXPECT_EQ(get->Header("x-test"), "1");
  EXPECT_EQ(get->Header("Server"), "kvmesh");

  auto post = client.Post(Url(server, "/echo"), R"({"a":1})", "application/json",
                          {{"Authorization", "Bearer t"}});
  ASSERT_TRUE(post.ok()) << post.status().ToString();
  EXPECT_EQ(post->status, 201);
  auto j = nlohmann::json::parse(post->body);
  EXPECT_EQ(j["body"], R"({"a":1})");
  EXPECT_EQ(j["auth"], "Bearer t");
  EXPECT_EQ(j["ct"], "application/json");
  EXPECT_EQ(post->Header("content-type"), "application/json");
}

TEST(HttpServerTest, KeepAliveReusesOneConnection) {
  HttpServer server({});
  server.Route("GET", "/n", [](const HttpRequest&) { return HttpResponse{200, "text/plain", {}, "ok"}; });
  ASSERT_TRUE(server.Start().ok());
  HttpClient client;
  for (int i = 0; i < 5; ++i) {
    auto r = client.Get(Url(server, "/n"));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, "ok");
  }
  EXPECT_EQ(server.accepted_connections(), 1u);
  EXPECT_EQ(client.connections_opened(), 1u);

  HttpClientOptions no_reuse;
  no_reuse.keep_alive = false;
  HttpClient closer(no_reuse);
  ASSERT_TRUE(closer.Get(Url(server, "/n")).ok());
  ASSERT_TRUE(closer.Get(Url(server, "/n")).ok());
  EXPECT_EQ(server.accepted_connections(), 3u);
}

TEST(HttpServerTest, OversizedBodyIs413WithJsonError) {
  HttpServerOptions opts;
  opts.max_request_body_bytes = 1024;
  HttpServer server(opts);
  server.Route("POST", "/in", [](const HttpRequest& r) {
    return HttpResponse{200, "text/plain", {}, std::to_string(r.body.size())};
  });
  ASSERT_TRUE(server.Start().ok());
  HttpClient client;
  auto ok = client.Post(Url(server, "/in"), std::string(1024, 'a'));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->body, "1024");
  auto big = client.Post(Url(server, "/in"), std::string(256 * 1024, 'a'));
  ASSERT_TRUE(big.ok()) << big.status().ToString();
  EXPECT_EQ(big->status, 413);
  EXPECT_EQ(ErrorJson(*big)["code"], "request_too_large");
  EXPECT_EQ(ErrorJson(*big)["type"], "invalid_request_error");
  EXPECT_NE(ErrorJson(*big)["message"].get<std::string>().find("1024"), std::string::npos);
  // The server closed that connection; the client recovers on a new one.
  auto again = client.Post(Url(server, "/in"), "xy");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->body, "2");
}

TEST(HttpServerTest, UnknownPathIs404WrongMethodIs405) {
  HttpServer server({});
  server.Route("GET", "/only-get", [](const HttpRequest&) { return HttpResponse{}; });
  server.RoutePrefix("GET", "/files/", [](const HttpRequest& r) {
    return HttpResponse{200, "text/plain", {}, "file " + r.path};
  });
  ASSERT_TRUE(server.Start().ok());
  HttpClient client;
  auto nf = client.Get(Url(server, "/nope"));
  ASSERT_TRUE(nf.ok());
  EXPECT_EQ(nf->status, 404);
  EXPECT_EQ(ErrorJson(*nf)["type"], "not_found_error");
  auto wm = client.Post(Url(server, "/only-get"), "{}");
  ASSERT_TRUE(wm.ok());
  EXPECT_EQ(wm->status, 405);
  EXPECT_EQ(wm->Header("allow"), "GET");
  EXPECT_EQ(ErrorJson(*wm)["code"], "method_not_allowed");
  auto pf = client.Get(Url(server, "/files/a/b"));
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ(pf->body, "file /files/a/b");
}

TEST(HttpServerTest, MalformedRequestIs400) {
  HttpServer server({});
  server.Route("GET", "/", [](const HttpRequest&) { return HttpResponse{}; });
  ASSERT_TRUE(server.Start().ok());
  std::string out = RawExchange(server.port(), "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 400", 0), 0u) << out;
  EXPECT_NE(out.find("\"invalid_request_error\""), std::string::npos) << out;
}

TEST(HttpServerTest, ThrowingHandlerIs500) {
  HttpServer server({});
  server.Route("GET", "/boom", [](const HttpRequest&) -> HttpResponse {
    throw std::runtime_error("kaput");
  });
  ASSERT_TRUE(server.Start().ok());
  HttpClient client;
  auto r = client.Get(Url(server, "/boom"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(ErrorJson(*r)["type"], "server_error");
  EXPECT_NE(ErrorJson(*r)["message"].get<std::string>().find("kaput"), std::string::npos);
  // The server keeps serving on the same connection.
  auto r2 = client.Get(Url(server, "/boom"));
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(server.accepted_connections(), 1u);
}

TEST(HttpServerTest, ErrorResponseForMapsStatus) {
  HttpResponse bad = ErrorResponseFor(InvalidArgumentError("block_size must be > 0, got 0"));
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.content_type, "application/json");
  auto j = nlohmann::json::parse(bad.body)["error"];
  EXPECT_EQ(j["message"], "block_size must be > 0, got 0");
  EXPECT_EQ(j["type"], "invalid_request_error");
  EXPECT_EQ(j["code"], "invalid_argument");
  HttpResponse busy = ErrorResponseFor(ResourceExhaustedError("queue full"), 3);
  EXPECT_EQ(busy.status, 429);
  ASSERT_EQ(busy.headers.size(), 1u);
  EXPECT_EQ(busy.headers[0], (std::pair<std::string, std::string>{"Retry-After", "3"}));
  EXPECT_EQ(nlohmann::json::parse(busy.body)["error"]["type"], "rate_limit_error");
  EXPECT_EQ(ErrorResponseFor(UnavailableError("x")).status, 503);
}

TEST(HttpServerTest, BindConflictIsUnavailable) {
  HttpServer a({});
  ASSERT_TRUE(a.Start().ok());
  HttpServerOptions opts;
  opts.port = a.port();
  HttpServer b(opts);
  Status s = b.Start();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("bind 127.0.0.1:" + std::to_string(a.port())), std::string::npos);
  HttpServerOptions bad;
  bad.num_threads = 0;
  EXPECT_EQ(HttpServer(bad).Start().code(), StatusCode::kInvalidArgument);
}

// The handler sends event i+1 only after the client acknowledged event i: the test can only pass
// if every event is written to the socket as soon as it is sent.
TEST(HttpServerTest, SseFlushesEachEvent) {
  constexpr int kEvents = 5;
  std::mutex mu;
  std::condition_variable cv;
  int acked = -1;
  bool handler_ok = true;
  std::thread producer;
  HttpServer server({});
  server.RouteStream("POST", "/v1/stream", StreamWriter::Mode::kSse,
                     [&](const HttpRequest&, std::shared_ptr<StreamWriter> w) {
                       producer = std::thread([&, w] {
                         for (int i = 0; i < kEvents; ++i) {
                           w->Send("{\"i\":" + std::to_string(i) + "}\nline2");
                           std::unique_lock<std::mutex> lock(mu);
                           if (!cv.wait_for(lock, 10s, [&] { return acked >= i; })) {
                             handler_ok = false;
                             break;
                           }
                         }
                         w->SendEvent("done", "[DONE]", "7");
                         w->Close();
                       });
                     });
  ASSERT_TRUE(server.Start().ok());
  HttpClient client;
  std::vector<SseEvent> events;
  ClientRequest req;
  req.method = "POST";
  req.url = Url(server, "/v1/stream");
  auto r = client.StreamSse(req, [&](const SseEvent& e) {
    events.push_back(e);
    std::lock_guard<std::mutex> lock(mu);
    ++acked;
    cv.notify_all();
    return true;
  });
  producer.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(handler_ok);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("content-type"), "text/event-stream");
  ASSERT_EQ(events.size(), static_cast<std::size_t>(kEvents + 1));
  for (int i = 0; i < kEvents; ++i) {
    EXPECT_EQ(events[i].data, "{\"i\":" + std::to_string(i) + "}\nline2");
  }
  EXPECT_EQ(events.back().event, "done");
  EXPECT_EQ(events.back().data, "[DONE]");
  EXPECT_EQ(events.back().id, "7");
}

TEST(HttpServerTest, ChunkedStreamDeliversBytes) {
  HttpServer server({});
  server.RouteStream("GET", "/chunks", StreamWriter::Mode::kChunked,
                     [](const HttpRequest&, std::shared_ptr<StreamWriter> w) {
                       w->Send("abc");
                       w->Send("");
                       w->Send(std::string(40000, 'z'));
                       w->Close();
                       EXPECT_FALSE(w->Send("late"));
                     });
  ASSERT_TRUE(server.Start().ok());
  HttpClient client;
  std::string got;
  ClientRequest req;
  req.url = Url(server, "/chunks");
  auto r = client.Stream(req, [&](std::string_view d) {
    got.append(d);
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(got, "abc" + std::string(40000, 'z'));
  EXPECT_EQ(r->Header("transfer-encoding"), "chunked");
}

TEST(HttpServerTest, ClientDisconnectIsDetectedByWriter) {
  std::promise<void> disconnected;
  std::shared_ptr<StreamWriter> writer;
  HttpServer server({});
  server.RouteStream("GET", "/sse", StreamWriter::Mode::kSse,
                     [&](const HttpRequest&, std::shared_ptr<StreamWriter> w) {
                       writer = w;
                       w->SetOnDisconnect([&] { disconnected.set_value(); });
                       w->Send("first");
                     });
  ASSERT_TRUE(server.Start().ok());
  {
    HttpClient client;
    ClientRequest req;
    req.url = Url(server, "/sse");
    int n = 0;
    auto r = client.StreamSse(req, [&](const SseEvent&) { return ++n < 1; });  // stop at once
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(n, 1);
  }
  auto fut = disconnected.get_future();
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(writer->IsClosed());
  EXPECT_FALSE(writer->Send("after"));
}

TEST(HttpServerTest, GracefulStopFinishesInFlightAndRefusesNew) {
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> release_f = release.get_future().share();
  HttpServer server({});
  server.Route("GET", "/slow", [&](const HttpRequest&) {
    entered.set_value();
    release_f.wait();
    return HttpResponse{200, "text/plain", {}, "finished"};
  });
  ASSERT_TRUE(server.Start().ok());
  const uint16_t port = server.port();
  std::promise<StatusOr<ClientResponse>> result;
  std::thread in_flight([&] {
    HttpClient c;
    result.set_value(c.Get(Url(server, "/slow")));
  });
  entered.get_future().wait();

  server.StopAccepting();
  HttpClient late;
  auto refused = late.Get("http://127.0.0.1:" + std::to_string(port) + "/slow");
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("connect to 127.0.0.1:" + std::to_string(port)),
            std::string::npos);

  std::thread stopper([&] { server.Stop(30s); });
  release.set_value();
  auto r = result.get_future().get();
  in_flight.join();
  stopper.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "finished");
  EXPECT_EQ(server.open_connections(), 0u);
}

TEST(HttpServerTest, StopForceClosesStuckStreamAfterGrace) {
  std::promise<void> disconnected;
  std::shared_ptr<StreamWriter> writer;
  auto server = std::make_unique<HttpServer>(HttpServerOptions{});
  server->RouteStream("GET", "/forever", StreamWriter::Mode::kSse,
                      [&](const HttpRequest&, std::shared_ptr<StreamWriter> w) {
                        writer = w;
                        w->SetOnDisconnect([&] { disconnected.set_value(); });
                        w->Send("tick");
                      });
  ASSERT_TRUE(server->Start().ok());
  std::promise<void> got_first;
  std::thread client_thread([&] {
    HttpClient c;
    ClientRequest req;
    req.url = Url(*server, "/forever");
    bool first = true;
    auto r = c.StreamSse(req, [&](const SseEvent&) {
      if (first) got_first.set_value();
      first = false;
      return true;
    });
    EXPECT_FALSE(r.ok());  // the server cut the stream before its end
  });
  got_first.get_future().wait();
  server->Stop(10ms);
  client_thread.join();
  EXPECT_EQ(disconnected.get_future().wait_for(0s), std::future_status::ready);
  EXPECT_TRUE(writer->IsClosed());
  server.reset();
  EXPECT_FALSE(writer->Send("after destruction"));  // safe after the server is gone
}

TEST(HttpServerTest, AsyncHandlerAnswersFromAnotherThreadOnAKeptAliveConnection) {
  std::vector<std::thread> workers;
  HttpServer server({});
  server.RouteAsync("POST", "/later", [&](const HttpRequest& r, std::shared_ptr<Responder> resp) {
    workers.emplace_back([resp, body = r.body] {
      std::this_thread::sleep_for(20ms);
      EXPECT_TRUE(resp->Respond(JsonResponse(202, "{\"echo\":\"" + body + "\"}")));
      EXPECT_FALSE(resp->Respond(JsonResponse(200, "{}")));  // only the first answer counts
    });
  });
  server.RouteAsync("POST", "/error", [](const HttpRequest&, std::shared_ptr<Responder> resp) {
    resp->Respond(ErrorResponseFor(UnavailableError("busy"), 3));
  });
  server.RouteAsync("POST", "/dropped", [](const HttpRequest&, std::shared_ptr<Responder>) {});
  ASSERT_TRUE(server.Start().ok());
  HttpClient client;
  for (int i = 0; i < 3; ++i) {
    auto r = client.Post(Url(server, "/later"), "x" + std::to_string(i));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 202);
    EXPECT_EQ(nlohmann::json::parse(r->body)["echo"], "x" + std::to_string(i));
  }
  EXPECT_EQ(client.connections_opened(), 1u);  // keep-alive survives async answers
  auto e = client.Post(Url(server, "/error"), "");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->status, 503);
  EXPECT_EQ(e->Header("Retry-After"), "3");
  auto d = client.Post(Url(server, "/dropped"), "");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->status, 500);  // a handler that drops its responder still answers
  for (auto& t : workers) t.join();
}

// An async handler that answers at once, many times over kept-alive connections: the answer's
// write can complete before the cancelled disconnect-detecting read has run its handler, and
// the server must not start the next request's read while that read is still pending (Beast
// asserts on two reads in flight on one stream).
TEST(HttpServerTest, ImmediateAsyncAnswersOnKeptAliveConnectionsNeverOverlapReads) {
  HttpServerOptions options;
  options.num_threads = 4;
  HttpServer server(options);
  server.RouteAsync("POST", "/now", [](const HttpRequest& r, std::shared_ptr<Responder> resp) {
    resp->Respond(JsonResponse(r.body.size() % 2 == 0 ? 200 : 503, "{}"));
  });
  ASSERT_TRUE(server.Start().ok());
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      HttpClient client;
      for (int i = 0; i < 500; ++i) {
        auto r = client.Post(Url(server, "/now"), std::string(static_cast<size_t>(i + c), 'x'));
        if (r.ok() && r->status == ((i + c) % 2 == 0 ? 200 : 503)) ++ok;
      }
      EXPECT_EQ(client.connections_opened(), 1u);
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 2000);
}

TEST(HttpServerTest, AsyncHandlerCanStreamAndSeesDisconnectWhileWaiting) {
  std::promise<void> disconnected;
  std::shared_ptr<Responder> pending;
  std::mutex mu;
  HttpServer server({});
  server.RouteAsync("GET", "/stream", [](const HttpRequest&, std::shared_ptr<Responder> resp) {
    std::thread([resp] {
      auto w = resp->StartStream(StreamWriter::Mode::kSse);
      ASSERT_NE(w, nullptr);
      EXPECT_EQ(resp->StartStream(StreamWriter::Mode::kSse), nullptr);
      w->Send("a");
      w->Send("b");
      w->Close();
    }).detach();
  });
  server.RouteAsync("GET", "/never", [&](const HttpRequest&, std::shared_ptr<Responder> resp) {
    resp->SetOnDisconnect([&] { disconnected.set_value(); });
    std::lock_guard<std::mutex> lock(mu);
    pending = resp;  // keeps the request open until the client leaves
  });
  ASSERT_TRUE(server.Start().ok());
  {
    HttpClient client;
    ClientRequest req;
    req.url = Url(server, "/stream");
    std::vector<std::string> got;
    auto r = client.StreamSse(req, [&](const SseEvent& ev) {
      got.push_back(ev.data);
      return true;
    });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(got, (std::vector<std::string>{"a", "b"}));
  }
  {
    net::io_context ioc;
    net::ip::tcp::socket sock(ioc);
    sock.connect({net::ip::make_address("127.0.0.1"), server.port()});
    const std::string req = "GET /never HTTP/1.1\r\nHost: x\r\n\r\n";
    net::write(sock, net::buffer(req));
    for (int i = 0; i < 200; ++i) {
      std::lock_guard<std::mutex> lock(mu);
      if (pending) break;
      std::this_thread::sleep_for(5ms);
    }
    sock.close();
  }
  auto fut = disconnected.get_future();
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_NE(pending, nullptr);
  EXPECT_TRUE(pending->IsDisconnected());
  EXPECT_FALSE(pending->Respond(JsonResponse(200, "{}")));
}

}  // namespace
}  // namespace kvmesh::http
