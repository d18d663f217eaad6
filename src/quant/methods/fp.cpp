// fp: the layer keeps its original precision. No factory: the pipeline leaves such layers as
// they are, and make_method refuses the name.
#include "quant/method.h"

namespace lrq {

LRQ_REGISTER_METHOD(fp, {.spec = {"fp", "keep the layer in its original precision", {}},
                         .order = 10});

}  // namespace lrq
