// ZMQ transport for KV events, wire-compatible with vLLM's ZmqEventPublisher
// (vllm/distributed/kv_events.py) and its replay protocol.
//
// KvEventPublisher binds a PUB socket and sends each sequenced batch as the 3-frame message
// [topic, seq (8 bytes big-endian), msgpack payload] (see kv/kv_event_codec.h). With a replay
// endpoint it also binds a ROUTER socket and answers replay requests from a KvEventRecorder:
//   request  (client DEALER sends)  [empty, start_seq (8 bytes BE)]   (a REQ socket adds the
//                                    empty delimiter itself; the ROUTER sees [id, empty, seq])
//   answers  one message per retained batch with seq >= start_seq, oldest first:
//                                    [empty, seq (8 bytes BE), payload]
//   end      [empty, ff ff ff ff ff ff ff ff (seq -1), empty payload]
// Like vLLM, a start_seq older than the retained window gets every retained batch (so the first
// replayed seq is larger than the one asked for: the client sees the gap and must resync from an
// inventory snapshot); a start_seq ahead of the publisher's next seq gets only the end marker.
// A malformed request (frame count != 3, seq frame not 8 bytes) is dropped without an answer.
//
// KvEventSubscriber connects a SUB socket (topic prefix filter) and decodes each message with
// the codec's DecodeLimits; a message that does not decode is an error Status for that message
// only, the next Receive() continues with the next message.
//
// Threading: no internal threads. Each socket is used by one thread at a time: Publish() touches
// only the PUB socket and ServeReplay() only the ROUTER socket, so the owner may call them from
// two different threads (e.g. the engine's publisher loop and a replay loop), but neither
// concurrently with itself. The KvEventRecorder is thread-safe and must outlive the publisher.
// Subscriber methods must not be called concurrently. Destructors close the sockets with linger
// 0 (unsent messages are dropped). No method throws; ZMQ errors come back as kUnavailable.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kv/kv_event_codec.h"
#include "kv/kv_event_recorder.h"

namespace kvmesh::kv {

struct KvEventPublisherOptions {
  std::string endpoint = "tcp://127.0.0.1:0";  // PUB, bound; port 0 picks a free port
  std::string replay_endpoint;                 // ROUTER, bound; empty disables replay
  std::string topic;                           // first frame of every message
  int send_hwm = 100000;                       // messages queued per subscriber before drops
};

class KvEventPublisher {
 public:
  // `recorder` supplies replay batches; it may be null when replay is disabled and must outlive
  // the publisher. Errors: kInvalidArgument for a replay endpoint without a recorder;
  // kUnavailable when a socket cannot bind.
  static StatusOr<std::unique_ptr<KvEventPublisher>> Create(const KvEventPublisherOptions& options,
                                                            const KvEventRecorder* recorder);
  ~KvEventPublisher();
  KvEventPublisher(const KvEventPublisher&) = delete;
  KvEventPublisher& operator=(const KvEventPublisher&) = delete;

  // Resolved endpoints (ZMQ_LAST_ENDPOINT: the real port when bound to port 0). replay_endpoint()
  // is empty when replay is disabled.
  const std::string& endpoint() const;
  const std::string& replay_endpoint() const;

  // Sends [topic, seq, payload] without blocking. PUB drops messages for subscribers that are
  // not connected yet or are over the HWM (they detect the gap by seq and replay).
  // Errors: kUnavailable.
  Status Publish(uint64_t seq, const std::string& payload);
  Status Publish(const SequencedKvEventBatch& batch) { return Publish(batch.seq, batch.payload); }

  // Waits up to timeout_ms for a replay request, then answers the requests that are queued.
  // Returns the number of requests answered (0 on timeout); at most 64 requests are read per
  // call, the rest wait for the next call. Malformed requests are dropped and
  // not counted. Errors: kFailedPrecondition when replay is disabled; kUnavailable.
  StatusOr<int> ServeReplay(int timeout_ms);

 private:
  struct Impl;
  explicit KvEventPublisher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class KvEventSubscriber {
 public:
  // Connects a SUB socket to `endpoint` subscribed to `topic` (prefix match, "" = all).
  // ZMQ connects asynchronously: success does not mean the publisher is up, and messages
  // published before the subscription reaches the publisher are lost (PUB/SUB slow joiner).
  // Errors: kUnavailable (e.g. a malformed endpoint).
  static StatusOr<std::unique_ptr<KvEventSubscriber>> Create(const std::string& endpoint,
                                                             const std::string& topic = "",
                                                             DecodeLimits limits = {});
  ~KvEventSubscriber();
  KvEventSubscriber(const KvEventSubscriber&) = delete;
  KvEventSubscriber& operator=(const KvEventSubscriber&) = delete;

  // The next message, or nullopt when none arrives within timeout_ms. A message that does not
  // decode is consumed and returned as the codec's error (kInvalidArgument / kDataLoss); the
  // caller counts it and treats its seq as missed. Errors also: kUnavailable.
  StatusOr<std::optional<DecodedKvEventFrames>> Receive(int timeout_ms);

  // Connects a fresh DEALER to `replay_endpoint`, asks for batches from from_seq on and collects
  // them until the end marker. The result's topic fields are empty (replay carries no topic).
  // A reply may also carry vLLM's newer 3-frame form [topic, seq, payload] (accepted). Errors:
  // kDeadlineExceeded when the end marker does not arrive within timeout_ms; kDataLoss for a
  // reply of the wrong shape; the codec's error for a payload that does not decode;
  // kUnavailable. Batches before an error are discarded.
  StatusOr<std::vector<DecodedKvEventFrames>> Replay(const std::string& replay_endpoint,
                                                     uint64_t from_seq, int timeout_ms);

 private:
  struct Impl;
  explicit KvEventSubscriber(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh::kv
