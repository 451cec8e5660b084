// Status and StatusOr: the error type every kvmesh module returns across its boundary.
//
// A fallible function returns Status (no value) or StatusOr<T> (a value or an error). No exception
// crosses a module boundary: third-party exceptions are caught where they are thrown and turned
// into a Status whose message names what was wrong and the offending value.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kvmesh {

enum class StatusCode : int {
  kOk = 0,
  kCancelled,
  kInvalidArgument,
  kDeadlineExceeded,
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,
  kResourceExhausted,
  kFailedPrecondition,
  kAborted,
  kOutOfRange,
  kUnimplemented,
  kInternal,
  kUnavailable,
  kDataLoss,
  kUnauthenticated,
};

std::string_view StatusCodeName(StatusCode code);

// HTTP status for a code: invalid argument 400, unauthenticated 401, permission denied 403,
// not found 404, already exists 409, resource exhausted 429 (callers may choose 503), unavailable
// 503, deadline exceeded 504, unimplemented 501, everything else 500.
int HttpStatusFor(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: block_size must be > 0, got 0", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

Status CancelledError(std::string message);
Status InvalidArgumentError(std::string message);
Status DeadlineExceededError(std::string message);
Status NotFoundError(std::string message);
Status AlreadyExistsError(std::string message);
Status PermissionDeniedError(std::string message);
Status ResourceExhaustedError(std::string message);
Status FailedPreconditionError(std::string message);
Status AbortedError(std::string message);
Status OutOfRangeError(std::string message);
Status UnimplementedError(std::string message);
Status InternalError(std::string message);
Status UnavailableError(std::string message);
Status DataLossError(std::string message);
Status UnauthenticatedError(std::string message);

// A value or a non-OK Status. Constructing from an OK Status is a bug and yields kInternal.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const T& value) : v_(value) {}                // NOLINT(google-explicit-constructor)
  StatusOr(T&& value) : v_(std::move(value)) {}           // NOLINT(google-explicit-constructor)
  StatusOr(Status status) : v_(std::move(status)) {       // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) {
      v_ = Status(StatusCode::kInternal, "StatusOr constructed from an OK status without a value");
    }
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

  // Precondition: ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  T value_or(T fallback) const& { return ok() ? std::get<T>(v_) : std::move(fallback); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace kvmesh

#define KVMESH_STATUS_CONCAT_INNER_(a, b) a##b
#define KVMESH_STATUS_CONCAT_(a, b) KVMESH_STATUS_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function if `expr` is not OK.
#define KVMESH_RETURN_IF_ERROR(expr)                   \
  do {                                                 \
    ::kvmesh::Status kvmesh_status_ = (expr);          \
    if (!kvmesh_status_.ok()) return kvmesh_status_;   \
  } while (0)

// `lhs` = value of the StatusOr `expr`, or return its Status from the enclosing function.
#define KVMESH_ASSIGN_OR_RETURN(lhs, expr) \
  KVMESH_ASSIGN_OR_RETURN_IMPL_(KVMESH_STATUS_CONCAT_(kvmesh_statusor_, __LINE__), lhs, expr)
#define KVMESH_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
