//! ONNX import (placeholder).
