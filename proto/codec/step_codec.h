// Conversions between the worker-link messages (worker.proto) and the plain step structs of
// common/step.h, so generated types stay at the edges (layer: proto; thread-safe).
#pragma once

#include "absl/status/statusor.h"
#include "common/step.h"
#include "tpserve/v1/worker.pb.h"

namespace tpserve {

void ToProto(const StepPlan& plan, v1::StepPlanMsg* msg);
StepPlan FromProto(const v1::StepPlanMsg& msg);
void ToProto(const StepResult& result, v1::StepResultMsg* msg);
StepResult FromProto(const v1::StepResultMsg& msg);

}  // namespace tpserve
