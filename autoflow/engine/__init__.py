"""The engine: planner (pure rules), executor (runs one node), dispatch (Huey), worker, reaper."""
