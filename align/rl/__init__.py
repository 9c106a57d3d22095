"""Online RL from a reward model: PPO's losses (`ppo_losses`), its trainer (`ppo`) and TRL's RLOO/GRPO glue (`trl_online`)."""
