//! Berth's fuzz harness and crash-injection tests for the CNI plugins. The code is all test
//! code (`tests/`): see `README.md` beside this file. This library is empty on purpose; it
//! exists because a package needs a target.
