// Opening any checkpoint lrquant can run: a dense Hugging Face folder or llama2.c file, or a
// folder written by `lrquant quantize` (its packed layers are built from the stored tensors).
#pragma once
#include <memory>
#include <string>

#include "model/llama.h"

namespace lrq {

std::unique_ptr<Model> load_model(const std::string& path);

}  // namespace lrq
