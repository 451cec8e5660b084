#include "common/status.h"

namespace kvmesh {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange: return 400;
    case StatusCode::kUnauthenticated: return 401;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kAborted: return 409;
    case StatusCode::kResourceExhausted: return 429;
    case StatusCode::kCancelled: return 499;
    case StatusCode::kUnimplemented: return 501;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kDeadlineExceeded: return 504;
    case StatusCode::kFailedPrecondition:
    case StatusCode::kInternal:
    case StatusCode::kDataLoss: return 500;
  }
  return 500;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(StatusCodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string m(context);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m));
}

#define KVMESH_DEFINE_ERROR_(fn, code) \
  Status fn(std::string message) { return Status(StatusCode::code, std::move(message)); }
KVMESH_DEFINE_ERROR_(CancelledError, kCancelled)
KVMESH_DEFINE_ERROR_(InvalidArgumentError, kInvalidArgument)
KVMESH_DEFINE_ERROR_(DeadlineExceededError, kDeadlineExceeded)
KVMESH_DEFINE_ERROR_(NotFoundError, kNotFound)
KVMESH_DEFINE_ERROR_(AlreadyExistsError, kAlreadyExists)
KVMESH_DEFINE_ERROR_(PermissionDeniedError, kPermissionDenied)
KVMESH_DEFINE_ERROR_(ResourceExhaustedError, kResourceExhausted)
KVMESH_DEFINE_ERROR_(FailedPreconditionError, kFailedPrecondition)
KVMESH_DEFINE_ERROR_(AbortedError, kAborted)
KVMESH_DEFINE_ERROR_(OutOfRangeError, kOutOfRange)
KVMESH_DEFINE_ERROR_(UnimplementedError, kUnimplemented)
KVMESH_DEFINE_ERROR_(InternalError, kInternal)
KVMESH_DEFINE_ERROR_(UnavailableError, kUnavailable)
KVMESH_DEFINE_ERROR_(DataLossError, kDataLoss)
KVMESH_DEFINE_ERROR_(UnauthenticatedError, kUnauthenticated)
#undef KVMESH_DEFINE_ERROR_

}  // namespace kvmesh
