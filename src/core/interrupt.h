// Ctrl-C during long jobs: the first SIGINT/SIGTERM sets a flag that long loops poll, so they
// unwind through their destructors (temporary output folders are removed) and exit cleanly;
// a second signal kills the process the default way.
#pragma once

namespace lrq {

void install_interrupt_handler();
/// Throws Error("interrupted") when a signal arrived.
void check_interrupted();

}  // namespace lrq
