//! Storage manager: SR drivers and VDI formats (not implemented yet).
