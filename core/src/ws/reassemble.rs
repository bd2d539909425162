//! Fragments → messages. (Being written.)
