"""Operations on one partition while the group runs: hand-off and replay."""
