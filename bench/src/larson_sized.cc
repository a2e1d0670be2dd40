// larson_sized: larson_server.c built as C++, with new char[] and sized
// operator delete[] (the public larson program's CPP and SIZED variants).
#define LARSON_SIZED 1
#include "larson_server.c"
