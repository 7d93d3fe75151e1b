// Status helpers shared by every module (layer: common; no threading concerns).
// Debian's abseil ships no status macros, so the two we use live here.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TPSERVE_CONCAT_INNER(a, b) a##b
#define TPSERVE_CONCAT(a, b) TPSERVE_CONCAT_INNER(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                       \
  do {                                              \
    ::absl::Status tpserve_status_ = (expr);        \
    if (!tpserve_status_.ok()) return tpserve_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX())` declares x from an OK StatusOr or returns its error.
// The expression may contain commas (lambdas, templates); the left side may not.
#define ASSIGN_OR_RETURN(lhs, ...) \
  ASSIGN_OR_RETURN_IMPL(TPSERVE_CONCAT(tpserve_statusor_, __LINE__), lhs, __VA_ARGS__)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, ...) \
  auto tmp = (__VA_ARGS__);                   \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()
