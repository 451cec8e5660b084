#include "kv/kv_event_zmq.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace kvmesh::kv {
namespace {

constexpr int kTimeoutMs = 3000;
constexpr uint64_t kProbeSeq = ~0ull - 1;  // never a real seq in these tests

// PUB/SUB drops messages until the subscription has reached the publisher (slow joiner).
// `publish_probe` sends one valid probe; repeat it until the subscriber sees one (bounded by a
// deadline, no sleeps), then drain the probes still in flight.
template <typename PublishProbe>
void WaitSubscribed(PublishProbe publish_probe, KvEventSubscriber& sub) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (std::chrono::steady_clock::now() < deadline) {
    publish_probe();
    auto got = sub.Receive(10);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    if (!got->has_value()) continue;
    ASSERT_EQ((*got)->seq, kProbeSeq);
    while (true) {
      auto more = sub.Receive(50);
      ASSERT_TRUE(more.ok()) << more.status().ToString();
      if (!more->has_value()) return;
      ASSERT_EQ((*more)->seq, kProbeSeq);
    }
  }
  FAIL() << "subscriber never saw a probe";
}

KvEvent Removed(uint64_t i) { return BlockRemoved{{i, i + 100}, Medium::kG2}; }

KvEventBatch Batch(uint64_t i) {
  KvEventBatch b;
  b.ts = static_cast<double>(i) + 0.5;
  b.events.push_back(Removed(i));
  return b;
}

KvEventPublisherOptions PubOptions(std::string endpoint, std::string replay_endpoint,
                                   std::string topic = "") {
  KvEventPublisherOptions o;
  o.endpoint = std::move(endpoint);
  o.replay_endpoint = std::move(replay_endpoint);
  o.topic = std::move(topic);
  return o;
}

KvEventRecorderOptions RecorderOptions(size_t replay_capacity) {
  KvEventRecorderOptions o;
  o.replay_capacity = replay_capacity;
  return o;
}

// Publisher with a replay ring of 3 batches and five published batches (seqs 0..4).
class KvEventZmqTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pub = KvEventPublisher::Create(
        PubOptions("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "kv@w1"), &recorder_);
    ASSERT_TRUE(pub.ok()) << pub.status().ToString();
    pub_ = std::move(pub).value();
  }

  void Flush(uint64_t i) {
    recorder_.Emit(Removed(i));
    for (auto& b : recorder_.Flush(Batch(i).ts)) {
      ASSERT_TRUE(pub_->Publish(b).ok());
      sent_.push_back(std::move(b));
    }
  }

  // Serves replay on a second thread (as the owner's replay loop would) while the client waits.
  StatusOr<std::vector<DecodedKvEventFrames>> Replay(uint64_t from) {
    StatusOr<int> served = 0;
    std::thread server([&] { served = pub_->ServeReplay(kTimeoutMs); });
    auto r = sub_->Replay(pub_->replay_endpoint(), from, kTimeoutMs);
    server.join();
    EXPECT_TRUE(served.ok()) << served.status().ToString();
    if (served.ok()) {
      EXPECT_EQ(*served, 1);
    }
    return r;
  }

  KvEventRecorder recorder_{RecorderOptions(3)};
  std::unique_ptr<KvEventPublisher> pub_;
  std::unique_ptr<KvEventSubscriber> sub_;
  std::vector<SequencedKvEventBatch> sent_;
};

TEST_F(KvEventZmqTest, ReportsBoundEndpoints) {
  EXPECT_EQ(pub_->endpoint().rfind("tcp://127.0.0.1:", 0), 0u) << pub_->endpoint();
  EXPECT_NE(pub_->endpoint(), "tcp://127.0.0.1:0");
  EXPECT_EQ(pub_->replay_endpoint().rfind("tcp://127.0.0.1:", 0), 0u);
  EXPECT_NE(pub_->replay_endpoint(), pub_->endpoint());
}

TEST_F(KvEventZmqTest, RoundTripsBatchesInSeqOrderAndFiltersTopic) {
  auto sub = KvEventSubscriber::Create(pub_->endpoint(), "kv@");
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  sub_ = std::move(sub).value();
  // A subscriber for another worker's topic must see nothing.
  auto other = KvEventSubscriber::Create(pub_->endpoint(), "kv@w2");
  ASSERT_TRUE(other.ok());
  WaitSubscribed([&] { ASSERT_TRUE(pub_->Publish(kProbeSeq, EncodeKvEventBatch({})).ok()); },
                 *sub_);

  for (uint64_t i = 0; i < 5; ++i) Flush(i);
  ASSERT_EQ(sent_.size(), 5u);
  for (const auto& b : sent_) {
    auto got = sub_->Receive(kTimeoutMs);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ((*got)->topic, "kv@w1");
    EXPECT_EQ((*got)->seq, b.seq);
    EXPECT_EQ((*got)->batch, b.batch);
  }
  auto none = sub_->Receive(20);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto other_got = (*other)->Receive(20);
  ASSERT_TRUE(other_got.ok());
  EXPECT_FALSE(other_got->has_value());
}

TEST_F(KvEventZmqTest, ReplaysFromMiddleTooOldAndCaughtUp) {
  auto sub = KvEventSubscriber::Create(pub_->endpoint());
  ASSERT_TRUE(sub.ok());
  sub_ = std::move(sub).value();
  for (uint64_t i = 0; i < 5; ++i) Flush(i);  // ring keeps seqs 2..4

  auto r = Replay(3);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].seq, 3u);
  EXPECT_EQ((*r)[0].batch, sent_[3].batch);
  EXPECT_EQ((*r)[1].seq, 4u);
  EXPECT_EQ((*r)[1].batch, sent_[4].batch);
  EXPECT_EQ((*r)[0].topic, "");

  // Too old: like vLLM, every retained batch; the first seq (2) exceeds the one asked for (0).
  r = Replay(0);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ((*r)[k].seq, 2u + k);
    EXPECT_EQ((*r)[k].batch, sent_[2 + k].batch);
  }

  // Caught up, and ahead of the publisher (it restarted): only the end marker.
  r = Replay(5);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->empty());
  r = Replay(1000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->empty());
}

TEST_F(KvEventZmqTest, ReplayAnswersARawVllmStyleClientAndDropsMalformedRequests) {
  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(pub_->replay_endpoint());
  for (uint64_t i = 0; i < 3; ++i) Flush(i);

  // Malformed (no delimiter; 4-byte seq), then valid. Only the valid one is answered.
  const std::string bad_seq(4, '\0');
  const std::string seq1 = EncodeKvEventSeq(1);
  ASSERT_TRUE(zmq::send_multipart(dealer, std::vector<zmq::const_buffer>{zmq::buffer(seq1)}));
  ASSERT_TRUE(zmq::send_multipart(
      dealer, std::vector<zmq::const_buffer>{zmq::const_buffer(), zmq::buffer(bad_seq)}));
  ASSERT_TRUE(zmq::send_multipart(
      dealer, std::vector<zmq::const_buffer>{zmq::const_buffer(), zmq::buffer(seq1)}));
  int answered = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (answered == 0 && std::chrono::steady_clock::now() < deadline) {
    auto n = pub_->ServeReplay(100);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    answered += *n;
  }
  ASSERT_EQ(answered, 1);

  dealer.set(zmq::sockopt::rcvtimeo, kTimeoutMs);
  std::vector<std::vector<std::string>> replies;
  for (int k = 0; k < 3; ++k) {
    std::vector<zmq::message_t> msgs;
    ASSERT_TRUE(zmq::recv_multipart(dealer, std::back_inserter(msgs)));
    std::vector<std::string> frames;
    for (const auto& m : msgs) frames.emplace_back(m.data<char>(), m.size());
    replies.push_back(frames);
  }
  ASSERT_EQ(replies[0].size(), 3u);
  EXPECT_EQ(replies[0][0], "");
  EXPECT_EQ(replies[0][1], std::string("\0\0\0\0\0\0\0\1", 8));
  EXPECT_EQ(replies[0][2], sent_[1].payload);
  EXPECT_EQ(replies[1][1], EncodeKvEventSeq(2));
  EXPECT_EQ(replies[1][2], sent_[2].payload);
  EXPECT_EQ(replies[2], (std::vector<std::string>{"", std::string(8, '\xff'), ""}));
}

TEST(KvEventZmqRaw, CorruptMessageIsAnErrorAndTheNextOneDecodes) {
  zmq::context_t ctx;
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  pub.set(zmq::sockopt::linger, 0);
  pub.bind("tcp://127.0.0.1:0");
  auto send = [&](const std::vector<std::string>& frames) {
    std::vector<zmq::const_buffer> parts;
    for (const auto& f : frames) parts.push_back(zmq::buffer(f));
    ASSERT_TRUE(zmq::send_multipart(pub, parts));
  };
  auto sub = KvEventSubscriber::Create(pub.get(zmq::sockopt::last_endpoint), "",
                                       DecodeLimits{.max_payload_bytes = 1024});
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  WaitSubscribed([&] { send(EncodeKvEventFrames("t", kProbeSeq, {})); }, **sub);

  const std::vector<std::string> valid = EncodeKvEventFrames("t", 7, Batch(7));
  const std::vector<std::vector<std::string>> corrupt = {
      {"t", EncodeKvEventSeq(1)},                                // 2 frames
      {"t", std::string(7, '\0'), valid[2]},                     // 7-byte seq
      {"t", EncodeKvEventSeq(2), "\x93\xcb\x00"},                // truncated msgpack
      {"t", EncodeKvEventSeq(3), std::string(2000, '\x90')},     // over max_payload_bytes
      {"t", EncodeKvEventSeq(4), valid[2], "extra"},             // 4 frames
  };
  for (const auto& frames : corrupt) {
    send(frames);
    send(valid);
    auto bad = (*sub)->Receive(kTimeoutMs);
    EXPECT_FALSE(bad.ok()) << "frames: " << frames.size();
    auto good = (*sub)->Receive(kTimeoutMs);
    ASSERT_TRUE(good.ok()) << good.status().ToString();
    ASSERT_TRUE(good->has_value());
    EXPECT_EQ((*good)->seq, 7u);
    EXPECT_EQ((*good)->batch, Batch(7));
  }
}

TEST(KvEventZmqErrors, RejectsBadConfigurationAndTimesOut) {
  const KvEventPublisherOptions with_replay = PubOptions("tcp://127.0.0.1:0", "tcp://127.0.0.1:0");
  auto no_recorder = KvEventPublisher::Create(with_replay, nullptr);
  EXPECT_EQ(no_recorder.status().code(), StatusCode::kInvalidArgument);
  auto bad_bind = KvEventPublisher::Create(PubOptions("nonsense://x", ""), nullptr);
  EXPECT_EQ(bad_bind.status().code(), StatusCode::kUnavailable);
  auto bad_connect = KvEventSubscriber::Create("nonsense://x");
  EXPECT_EQ(bad_connect.status().code(), StatusCode::kUnavailable);

  auto pub = KvEventPublisher::Create({}, nullptr);
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ((*pub)->replay_endpoint(), "");
  EXPECT_EQ((*pub)->ServeReplay(0).status().code(), StatusCode::kFailedPrecondition);

  // Nobody answers on this ROUTER: the replay times out instead of hanging.
  KvEventRecorder recorder;
  auto silent = KvEventPublisher::Create(with_replay, &recorder);
  ASSERT_TRUE(silent.ok());
  auto sub = KvEventSubscriber::Create((*pub)->endpoint());
  ASSERT_TRUE(sub.ok());
  auto r = (*sub)->Replay((*silent)->replay_endpoint(), 0, 50);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace kvmesh::kv
