"""General prompts for self-distillation (written for this project).

When no general instruction file is configured, the base model answers these prompts before tuning, and its own
answers are mixed into the RecGen data. Training on them keeps the model close to its original behaviour on general
requests while it learns the recommendation task (a cheap stand-in for alpaca/LIMA data that needs no download).
They cover explanation, how-to, writing, rewriting, lists, reasoning, arithmetic, code, advice and definitions.
"""
from __future__ import annotations

GENERAL_PROMPTS: list[str] = [
    "Explain in two or three sentences why the sky looks blue during the day.",
    "Give three practical tips for keeping a houseplant healthy.",
    "Write a short, friendly email inviting a colleague to a team lunch on Friday.",
    "What is the difference between weather and climate?",
    "Summarise the water cycle in four steps.",
    "Suggest a name for a small bakery that specialises in sourdough bread, and explain the choice.",
    "Rewrite this sentence to be more formal: 'We gotta finish this thing by tomorrow.'",
    "List five vegetables that grow well in a cool climate.",
    "How do I make a cup of tea? Give simple step-by-step instructions.",
    "Explain what a recommender system is to someone who has never heard of one.",
    "A train travels 60 kilometres in 45 minutes. What is its average speed in kilometres per hour?",
    "Write a haiku about autumn leaves.",
    "What are the main benefits of regular exercise?",
    "Describe the plot of a detective story in three sentences, with a surprising ending.",
    "Write a Python function that returns the largest number in a list.",
    "What does it mean for a number to be prime? Give two examples.",
    "Give me a short packing list for a weekend camping trip.",
    "Explain the difference between a virus and a bacterium.",
    "Translate 'Good morning, how are you?' into French and Spanish.",
    "Why is it important to get enough sleep?",
    "Write a two-sentence product description for a reusable water bottle.",
    "What is photosynthesis, and why does it matter for life on Earth?",
    "Give three ideas for a rainy-day activity with children.",
    "Compare reading a paper book with reading an e-book: one advantage of each.",
    "If I have 3 apples and buy twice as many, then eat 2, how many apples do I have?",
    "Explain what an API is, using a restaurant as an analogy.",
    "Write a short motivational message for a student before an exam.",
    "What should I consider when choosing a laptop for programming?",
    "Describe how a bicycle's gears make pedalling easier uphill.",
    "Name three famous painters and one well-known work by each.",
    "Give a simple recipe for a vegetable omelette.",
    "What is the difference between saving and investing money?",
    "Write a polite reply declining an invitation to a party.",
    "Explain what the word 'empathy' means and give an example.",
    "How can I improve my concentration when studying at home?",
    "Sort these words alphabetically: pear, apple, mango, cherry, banana.",
    "Describe a sunset over the sea in vivid language, in three sentences.",
    "What are the pros and cons of working from home?",
    "Explain why the Moon has phases.",
    "Suggest three questions to ask at the end of a job interview.",
    "Write a short limerick about a cat who loves to sleep.",
    "What is a healthy breakfast, and why?",
]
