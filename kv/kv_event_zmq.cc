#include "kv/kv_event_zmq.h"

#include <chrono>
#include <iterator>
#include <string_view>
#include <utility>

#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace kvmesh::kv {
namespace {

// vLLM's END_SEQ: (-1).to_bytes(8, "big", signed=True).
const std::string& EndSeq() {
  static const std::string* const kEnd = new std::string(8, '\xff');
  return *kEnd;
}

constexpr int kMaxReplayRequestsPerServe = 64;

Status ZmqError(std::string_view what, const zmq::error_t& e) {
  return UnavailableError(std::string(what) + ": " + e.what());
}

std::string ToString(const zmq::message_t& m) { return std::string(m.data<char>(), m.size()); }

}  // namespace

struct KvEventPublisher::Impl {
  // Declared first so it is destroyed last, after the sockets (which use linger 0).
  zmq::context_t ctx{1};
  zmq::socket_t pub{ctx, zmq::socket_type::pub};
  std::optional<zmq::socket_t> router;
  std::string endpoint;
  std::string replay_endpoint;
  std::string topic;
  const KvEventRecorder* recorder = nullptr;

  // Retained batches with seq >= start, or every retained batch when start is older than the
  // window (vLLM's behaviour), or none when start is ahead of the next seq.
  std::vector<ReplayedKvEventBatch> BatchesFrom(uint64_t start) const {
    // The window can move between calls (the recorder flushes on another thread), so retry a
    // few times with the current oldest seq.
    for (int attempt = 0; attempt < 4; ++attempt) {
      auto batches = recorder->Replay(start);
      if (batches.ok()) return std::move(batches).value();
      const uint64_t next = recorder->next_seq();
      if (start > next) return {};
      start = next - recorder->num_replay_batches();
    }
    return {};
  }
};

KvEventPublisher::KvEventPublisher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KvEventPublisher::~KvEventPublisher() = default;

StatusOr<std::unique_ptr<KvEventPublisher>> KvEventPublisher::Create(
    const KvEventPublisherOptions& options, const KvEventRecorder* recorder) {
  if (!options.replay_endpoint.empty() && recorder == nullptr) {
    return InvalidArgumentError("replay_endpoint " + options.replay_endpoint +
                                " needs a KvEventRecorder");
  }
  auto impl = std::make_unique<Impl>();
  impl->topic = options.topic;
  impl->recorder = recorder;
  try {
    impl->pub.set(zmq::sockopt::linger, 0);
    impl->pub.set(zmq::sockopt::sndhwm, options.send_hwm);
    impl->pub.bind(options.endpoint);
    impl->endpoint = impl->pub.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return ZmqError("bind PUB " + options.endpoint, e);
  }
  if (!options.replay_endpoint.empty()) {
    try {
      impl->router.emplace(impl->ctx, zmq::socket_type::router);
      impl->router->set(zmq::sockopt::linger, 0);
      impl->router->bind(options.replay_endpoint);
      impl->replay_endpoint = impl->router->get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return ZmqError("bind ROUTER " + options.replay_endpoint, e);
    }
  }
  return std::unique_ptr<KvEventPublisher>(new KvEventPublisher(std::move(impl)));
}

const std::string& KvEventPublisher::endpoint() const { return impl_->endpoint; }
const std::string& KvEventPublisher::replay_endpoint() const { return impl_->replay_endpoint; }

Status KvEventPublisher::Publish(uint64_t seq, const std::string& payload) {
  try {
    const std::string seq_bytes = EncodeKvEventSeq(seq);
    const std::vector<zmq::const_buffer> parts = {
        zmq::buffer(impl_->topic), zmq::buffer(seq_bytes), zmq::buffer(payload)};
    if (!zmq::send_multipart(impl_->pub, parts, zmq::send_flags::dontwait)) {
      return UnavailableError("publish seq " + std::to_string(seq) + ": send would block");
    }
  } catch (const zmq::error_t& e) {
    return ZmqError("publish seq " + std::to_string(seq), e);
  }
  return Status::Ok();
}

StatusOr<int> KvEventPublisher::ServeReplay(int timeout_ms) {
  if (!impl_->router) return FailedPreconditionError("replay is disabled (no replay_endpoint)");
  int answered = 0;
  try {
    zmq::socket_t& router = *impl_->router;
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    int timeout = timeout_ms;
    // Bounded so that a flood of requests cannot keep the owner's loop here forever.
    for (int handled = 0;
         handled < kMaxReplayRequestsPerServe &&
         zmq::poll(&item, 1, std::chrono::milliseconds(timeout)) > 0;
         ++handled) {
      timeout = 0;  // answer what is queued, then return
      std::vector<zmq::message_t> req;
      if (!zmq::recv_multipart(router, std::back_inserter(req), zmq::recv_flags::dontwait)) {
        break;
      }
      // [identity, empty, start_seq]; anything else is dropped, like vLLM.
      if (req.size() != 3 || req[1].size() != 0) continue;
      auto start = DecodeKvEventSeq(std::string_view(req[2].data<char>(), req[2].size()));
      if (!start.ok()) continue;
      const std::string identity = ToString(req[0]);
      // ROUTER drops messages to a vanished or over-HWM peer instead of blocking; the client
      // then times out waiting for the end marker.
      auto send = [&](const std::string& seq, const std::string& payload) {
        const std::vector<zmq::const_buffer> parts = {zmq::buffer(identity), zmq::const_buffer(),
                                                      zmq::buffer(seq), zmq::buffer(payload)};
        (void)zmq::send_multipart(router, parts, zmq::send_flags::dontwait);
      };
      for (const auto& b : impl_->BatchesFrom(*start)) send(EncodeKvEventSeq(b.seq), b.payload);
      send(EndSeq(), "");
      ++answered;
    }
  } catch (const zmq::error_t& e) {
    return ZmqError("serve replay", e);
  }
  return answered;
}

struct KvEventSubscriber::Impl {
  zmq::context_t ctx{1};
  zmq::socket_t sub{ctx, zmq::socket_type::sub};
  DecodeLimits limits;
};

KvEventSubscriber::KvEventSubscriber(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KvEventSubscriber::~KvEventSubscriber() = default;

StatusOr<std::unique_ptr<KvEventSubscriber>> KvEventSubscriber::Create(const std::string& endpoint,
                                                                       const std::string& topic,
                                                                       DecodeLimits limits) {
  auto impl = std::make_unique<Impl>();
  impl->limits = limits;
  try {
    impl->sub.set(zmq::sockopt::linger, 0);
    impl->sub.set(zmq::sockopt::subscribe, topic);
    impl->sub.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return ZmqError("connect SUB " + endpoint, e);
  }
  return std::unique_ptr<KvEventSubscriber>(new KvEventSubscriber(std::move(impl)));
}

StatusOr<std::optional<DecodedKvEventFrames>> KvEventSubscriber::Receive(int timeout_ms) {
  std::vector<std::string> frames;
  try {
    zmq::pollitem_t item{impl_->sub.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) <= 0) {
      return std::optional<DecodedKvEventFrames>();
    }
    std::vector<zmq::message_t> msgs;
    if (!zmq::recv_multipart(impl_->sub, std::back_inserter(msgs), zmq::recv_flags::dontwait)) {
      return std::optional<DecodedKvEventFrames>();
    }
    frames.reserve(msgs.size());
    for (const auto& m : msgs) frames.push_back(ToString(m));
  } catch (const zmq::error_t& e) {
    return ZmqError("receive", e);
  }
  KVMESH_ASSIGN_OR_RETURN(DecodedKvEventFrames d, DecodeKvEventFrames(frames, impl_->limits));
  return std::optional<DecodedKvEventFrames>(std::move(d));
}

StatusOr<std::vector<DecodedKvEventFrames>> KvEventSubscriber::Replay(
    const std::string& replay_endpoint, uint64_t from_seq, int timeout_ms) {
  std::vector<DecodedKvEventFrames> out;
  const std::string what = "replay from seq " + std::to_string(from_seq) + " via " +
                           replay_endpoint;
  try {
    // A fresh DEALER per request, so late answers to an earlier timed-out request cannot mix in.
    zmq::socket_t dealer(impl_->ctx, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(replay_endpoint);
    const std::string seq = EncodeKvEventSeq(from_seq);
    const std::vector<zmq::const_buffer> req = {zmq::const_buffer(), zmq::buffer(seq)};
    // DEALER queues the request until the connection is up (bounded by the deadline below).
    if (!zmq::send_multipart(dealer, req, zmq::send_flags::dontwait)) {
      return UnavailableError(what + ": send would block");
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
      if (left.count() <= 0 || zmq::poll(&item, 1, left) <= 0) {
        return DeadlineExceededError(what + ": no end marker within " +
                                     std::to_string(timeout_ms) + " ms");
      }
      std::vector<zmq::message_t> msgs;
      if (!zmq::recv_multipart(dealer, std::back_inserter(msgs), zmq::recv_flags::dontwait)) {
        continue;
      }
      // [empty, seq, payload] (vLLM), or [empty, topic, seq, payload] (newer vLLM).
      if ((msgs.size() != 3 && msgs.size() != 4) || msgs[0].size() != 0) {
        return DataLossError(what + ": reply has " + std::to_string(msgs.size()) +
                             " frames, want [empty, (topic,) seq, payload]");
      }
      const size_t s = msgs.size() - 2;
      const std::string seq_frame = ToString(msgs[s]);
      if (seq_frame == EndSeq()) break;
      const std::vector<std::string> frames = {"", seq_frame, ToString(msgs[s + 1])};
      auto d = DecodeKvEventFrames(frames, impl_->limits);
      if (!d.ok()) return d.status().WithContext(what);
      out.push_back(std::move(d).value());
    }
  } catch (const zmq::error_t& e) {
    return ZmqError(what, e);
  }
  return out;
}

}  // namespace kvmesh::kv
