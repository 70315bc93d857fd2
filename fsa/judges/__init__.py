"""Is a feature match real? Judges (extractors that score images but never guide) and small,
label-preserving changes to the images (the robustness check). docs/judges.md explains both."""
