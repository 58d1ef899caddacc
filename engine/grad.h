// Higher-order gradients: grad() runs the VJPs that ops record (engine/autograd.h) with the
// differentiable ops of engine/ops.h, so it sits above both (autograd <- ops <- grad).
#pragma once

#include <vector>

#include "engine/autograd.h"

namespace gan {

// Gradients of `outputs` with respect to `inputs`, as Vars: sum_i <grad_outputs[i], d outputs[i] /
// d input> (grad_outputs default to ones; they must have the outputs' shapes). No .grad is touched
// and the tape is kept (a later backward() still runs through the forward). With create_graph the
// results are recorded on the tape (differentiable: the penalty of WGAN-GP, R1); without, they are
// plain values. Only ops on a path from an input to an output run their VJP. An input the outputs
// do not depend on gets zeros.
std::vector<Var> grad(const std::vector<Var>& outputs, const std::vector<Var>& inputs,
                      const std::vector<Var>& grad_outputs = {}, bool create_graph = false);

}  // namespace gan
