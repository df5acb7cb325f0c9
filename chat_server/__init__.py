"""The asyncio hub: routes and stores ciphertext, holds no one's private key."""
