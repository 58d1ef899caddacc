// Features of a set of images under a feature network (tools/eval/feature_nets.h), kept on the host
// as row-major float matrices for the metrics (tools/eval/metrics.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "tools/eval/feature_nets.h"
#include "tools/io/data.h"

namespace gan::eval {

// n rows of dim floats, row-major.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> values;
  const float* row(int64_t i) const { return values.data() + size_t(i) * size_t(cols); }
};

struct Extracted {
  Matrix features;  // (N, F)
  Matrix logits;    // (N, classes); 0 rows when the net has no classifier head
  // Squared k-th-neighbour radii of the rows within the set, by k (filled by
  // eval::cached_extract for a real set: they cost an N x N distance pass; metrics use them).
  std::map<int, std::vector<double>> radii2;
};

// Runs the network (eval mode) over every image of `data`, in dataset order, in batches of
// `batch` on `device`. Images are brought to the net's size and channels as gan_train's loader
// does (Fit::Pad: Fashion-MNIST's 28 x 28 centred on 32 x 32 at -1; larger images shrunk); a net
// of any input size gets them at their own size. limit > 0: only the first `limit` images.
Extracted extract(FeatureNet& net, std::shared_ptr<const data::Dataset> data, int batch,
                  Device device, int64_t limit = 0);

// Predicted class (argmax of the logits) of each row.
std::vector<int> predictions(const Matrix& logits);

}  // namespace gan::eval
