#include "core/interrupt.h"

#include <csignal>

#include "core/error.h"

namespace lrq {

namespace {
volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_signal(int sig) {
  g_signal = sig;
  std::signal(sig, SIG_DFL);  // the second one is not caught
}
}  // namespace

void install_interrupt_handler() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

void check_interrupted() {
  if (g_signal) fail("lrquant", "interrupted by signal {}; nothing was written", int(g_signal));
}

}  // namespace lrq
