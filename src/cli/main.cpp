#include <cstdio>
int main() { std::puts("lrquant (skeleton)"); return 0; }
