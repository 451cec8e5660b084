// LoopbackTransport: KvTransport within one process, by memcpy. For unit tests of the layers
// above the transport (the agent's KV puller, lease handling): same validation, same completion
// rules (callbacks only from Progress(), exactly once), no network.
//
// A descriptor's worker_address names a registered LoopbackTransport instance in a process-wide
// table ("loopback:<n>"); Connect() to an instance that was destroyed is Unavailable. A peer
// marked failed (FailPeer, for tests) completes its pending and future transfers with
// Unavailable, like a UCX peer that died.
#pragma once

#include <memory>

#include "agent/transfer/kv_transport.h"

namespace kvmesh::transfer {

class LoopbackTransport;

std::unique_ptr<KvTransport> CreateLoopbackTransport();

// Test hooks on a transport made by CreateLoopbackTransport (no-ops for other transports).
// hold = true holds completions in flight until called again with hold = false (to test cancel /
// timeout paths).
void LoopbackHoldCompletions(KvTransport* transport, bool hold);
// Makes every pending and future transfer on `peer` fail with Unavailable.
void LoopbackFailPeer(KvTransport* transport, PeerId peer);

}  // namespace kvmesh::transfer
