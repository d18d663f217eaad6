// The ops' argument checks (shapes, dtypes, ranges the host can see), written once for both
// backends and declared from backend/op_list.h: checks::gemm(...) checks ops::gemm's arguments
// and throws Error("<op>: <problem naming the tensors>"). ops.cpp calls them after the device
// check and before either backend runs; a backend checks only what needs its own memory or its
// own limits (32-bit sizes, kernel tile bounds, a permutation's range).
#pragma once
#include <span>

#include "backend/ops.h"

namespace lrq::checks {

using ops::LowRankTerm;
using ops::AdamParams;
using ops::Lords;
using ops::Packed;

#define LRQ_OP(name, ret, params, args, devices) void name params;
#include "backend/op_list.h"

}  // namespace lrq::checks
