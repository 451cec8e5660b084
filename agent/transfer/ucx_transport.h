// UcxTransport: KvTransport over UCX (UCP), one-sided RMA.
//
// One ucp_context + one ucp_worker (UCS_THREAD_MODE_SINGLE) per transport. RegisterLocal maps the
// block region with ucp_mem_map and packs its remote key; DescribeLocal returns the worker address
// and the packed key. Connect creates an endpoint from the peer's worker address with
// UCP_ERR_HANDLING_MODE_PEER (a dead peer fails its operations instead of aborting the process)
// and unpacks the peer's key. PostRead issues ucp_get_nbx per contiguous run of blocks, PostWrite
// ucp_put_nbx, followed by one ucp_ep_flush_nbx; the transfer completes when the flush does.
// On the CPU backend the region is host memory; the transport moves whatever UCX_TLS allows
// (tcp, posix/sysv shared memory, cma). UCX 1.13 from Debian has no CUDA transport, so device
// memory is staged by the caller (docs/kv-transfer.md).
// The side being read must call Progress() regularly although it posts nothing: UCX 1.13's tcp has
// no get_zcopy, so ucp_get over tcp is software emulation answered by the target's worker.
//
// Cancel(id) cannot recall an RMA operation already on the wire, so it force-closes the peer's
// endpoint: every transfer on that peer ends with Cancelled and the peer id becomes invalid
// (NotFound on the next Post*); the caller reconnects. A peer whose endpoint reported an error is
// closed the same way and its transfers end with Unavailable.
//
// Errors from UCX calls come back as Unavailable "<ucx call>: <ucs_status_string> (<file>:<line>)"
// (one checking macro, like NCCL's NCCLCHECK); nothing aborts.
#pragma once

#include <memory>
#include <string>

#include "agent/transfer/kv_transport.h"

namespace kvmesh::transfer {

struct UcxTransportOptions {
  // UCX transports to use ("tcp", "posix,sysv,cma,self", "shm", ...); empty = UCX's default
  // (the UCX_TLS environment variable, else all). Applied with ucp_config_modify("TLS").
  std::string tls;
  // Network devices for tcp (UCX_NET_DEVICES), e.g. "lo"; empty = UCX's default.
  std::string net_devices;
};

// Errors: Unavailable when UCX cannot create a context or worker (e.g. no transport matches
// options.tls), naming the option.
StatusOr<std::unique_ptr<KvTransport>> CreateUcxTransport(const UcxTransportOptions& options);

}  // namespace kvmesh::transfer
