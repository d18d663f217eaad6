// Opening any checkpoint lrquant can run: a dense Hugging Face folder or llama2.c file, or a
// folder written by `lrquant quantize` (its packed layers are built from the stored tensors).
#pragma once
#include <memory>
#include <string>

#include "model/llama.h"

namespace lrq {

/// Opens `path` and moves the model to `device` (Model::to). A CUDA device in a build without
/// the CUDA backend, or with no GPU visible, is an Error naming `device_arg`.
std::unique_ptr<Model> load_model(const std::string& path, Device device = Device::CPU,
                                  const std::string& device_arg = "--device");
/// "cpu" or "cuda" as a Device; anything else, or "cuda" where no GPU can be used, is an Error
/// naming `arg`.
Device parse_device(const std::string& name, const std::string& arg = "--device");

}  // namespace lrq
